"""Generated blocks of experiments/rank_sweep/README.md, from each data set's results.csv."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

from lowrank_jax.config import load_module
from lowrank_jax.tables import (
    TablesError,
    count_of,
    counts_note,
    markdown_table,
    prose,
    read_csv,
    signed,
    span,
)

# (layers, width, FFN width) of each data set's runlocal model, as the README's headings
# give them (configs/rank_sweep.py's comments); parameters() checks them against the results.
SHAPES = {"fashion_mnist": (1, 32, 64), "listops": (2, 64, 128)}
NAMES = {"fashion_mnist": "Fashion-MNIST", "listops": "ListOps"}


def _kind(run: dict[str, str]) -> tuple[int, int, str]:
    """Sort key and label: the dense reference, then FFN ranks, then Q/K/V/out ranks."""
    if run["ffn_rank"]:
        return 1, int(run["ffn_rank"]), f"factorized FFN R = {run['ffn_rank']}"
    if run["qkv_rank"]:
        return 2, int(run["qkv_rank"]), f"factorized Q/K/V/out R = {run['qkv_rank']}"
    return 0, 0, "dense (reference)"


def sweep_runs(folder: Path, dataset: str) -> list[dict[str, str]]:
    runs = [
        r for r in read_csv(folder / "results" / dataset / "results.csv") if r["status"] == "done"
    ]
    return sorted(runs, key=_kind)


def _weights(dataset: str, kind: str, rank: int | None = None) -> int:
    """Weights of the matrices a kind factorizes: all FFN ones, or all Q/K/V/out ones.

    Dense when ``rank`` is None; else the factors A [in, R] and B [R, out] of each.
    """
    layers, width, ffn = SHAPES[dataset]
    shapes = [(width, ffn), (ffn, width)] if kind == "ffn" else [(width, width)] * 4
    return layers * sum(i * o if rank is None else rank * (i + o) for i, o in shapes)


def overfits(runs: list[dict[str, str]]) -> dict:
    """Whether the dense reference overfits: its train − eval gap against the sampling error.

    Returns ``{"gap", "error", "overfits"}``: the gap, two binomial standard errors of that
    difference (train and eval accuracies each a count out of the smallest number of
    examples that makes every accuracy in ``runs`` whole, ``tables.count_of``), and
    whether the gap exceeds them. A model that does not overfit leaves no gap for a low
    rank to shrink.
    """
    dense = next(r for r in runs if _kind(r)[0] == 0)
    counts = {k: count_of(float(r[k]) for r in runs) for k in ("train_accuracy", "eval_accuracy")}
    p = {k: float(dense[k]) for k in counts}
    error = 2 * math.sqrt(sum(p[k] * (1 - p[k]) / counts[k] for k in counts))
    gap = p["train_accuracy"] - p["eval_accuracy"]
    return {"gap": gap, "error": error, "overfits": gap > error}


def parameters(folder: Path) -> str:
    """The parameters each data set's factorized points save, and the most they could."""
    parts = []
    for dataset, name in NAMES.items():
        runs = sweep_runs(folder, dataset)
        dense = int(runs[0]["params_total"])
        saved = []
        for run in runs[1:]:
            kind, rank = ("ffn", run["ffn_rank"]) if run["ffn_rank"] else ("qkv", run["qkv_rank"])
            expected = _weights(dataset, kind) - _weights(dataset, kind, int(rank))
            if dense - int(run["params_total"]) != expected:
                raise TablesError(f"{dataset}: SHAPES {SHAPES[dataset]} do not match {run['name']}")
            saved.append(1 - int(run["params_total"]) / dense)
        layers, width, _ = SHAPES[dataset]
        ffn, qkv = _weights(dataset, "ffn") / dense, _weights(dataset, "qkv") / dense
        parts.append(
            f"on {name} {span(saved, '.0%')} of the {dense:,} parameters "
            f"(the FFN weights are {ffn:.0%} of them and the Q/K/V/out weights "
            f"{qkv:.0%}; {layers} layer{'s' if layers > 1 else ''} of width {width})"
        )
    text = (
        f'- **Parameters**: the factorized points save {"; ".join(parts)} — the "vs dense" '
        "columns. A factorization can save at most the share of the matrices it replaces; "
        "the rest of the model (embeddings, position table, norms, biases, classifier) is "
        "untouched. The saving that matters is per-layer FLOPs, which grows with width "
        "(`benchmarks/factorized_dense.py`)."
    )
    return prose(text, 76).replace("\n", "\n  ")


def sweep_table(folder: Path, dataset: str, examples: str) -> str:
    runs = sweep_runs(folder, dataset)
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
    return (
        markdown_table(header, rows, "lrrrrrr")
        + "\n\n"
        + note
        + "\n\n"
        + prose(_listops().convergence_note(runs, lambda run: _kind(run)[2]))
    )


def _listops() -> ModuleType:
    return load_module(Path(__file__).parent.parent / "listops" / "tables.py")


def majority(folder: Path) -> str:
    """The ListOps test split's majority class, as experiments/listops counts it."""
    return _listops().majority(folder.parent / "listops")


TABLES = {
    "majority": majority,
    "fashion_mnist": lambda folder: sweep_table(folder, "fashion_mnist", "images"),
    "listops": lambda folder: sweep_table(folder, "listops", "trees"),
    "parameters": parameters,
}
