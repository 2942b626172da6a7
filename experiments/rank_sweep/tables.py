"""Generated blocks of experiments/rank_sweep/README.md, from each data set's results.csv."""

from __future__ import annotations

from pathlib import Path

from lowrank_jax.tables import counts_note, markdown_table, read_csv, signed


def _kind(run: dict[str, str]) -> tuple[int, int, str]:
    """Sort key and label: the dense reference, then FFN ranks, then Q/K/V/out ranks."""
    if run["ffn_rank"]:
        return 1, int(run["ffn_rank"]), f"factorized FFN R = {run['ffn_rank']}"
    if run["qkv_rank"]:
        return 2, int(run["qkv_rank"]), f"factorized Q/K/V/out R = {run['qkv_rank']}"
    return 0, 0, "dense (reference)"


def sweep_table(folder: Path, dataset: str, examples: str) -> str:
    runs = [
        r for r in read_csv(folder / "results" / dataset / "results.csv") if r["status"] == "done"
    ]
    runs.sort(key=_kind)
    dense = next(int(r["params_total"]) for r in runs if _kind(r)[0] == 0)
    rows = []
    for run in runs:
        params = int(run["params_total"])
        rows.append(
            [
                _kind(run)[2],
                f"{params:,}",
                "—" if params == dense else f"{params / dense - 1:+.0%}".replace("-", "−"),
                f"{float(run['eval_accuracy']):.3f}",
                f"{float(run['train_accuracy']):.3f}",
                signed(float(run["train_eval_gap"])),
                f"{float(run['median_step_time_s']):.2f}",
            ]
        )
    header = [
        "model",
        "params",
        "vs dense",
        "eval acc.",
        "train acc.",
        "gap (train − eval)",
        "median step (s)",
    ]
    note = counts_note(runs, examples, f"results/{dataset}/results.csv")
    return markdown_table(header, rows, "lrrrrrr") + "\n\n" + note


TABLES = {
    "fashion_mnist": lambda folder: sweep_table(folder, "fashion_mnist", "images"),
    "listops": lambda folder: sweep_table(folder, "listops", "trees"),
}
