"""Generated blocks of experiments/listops/README.md, from results/results.csv and paper.json."""

from __future__ import annotations

import json
from pathlib import Path

from lowrank_jax.tables import count_of, markdown_table, prose, read_csv, signed, stderr

KINDS = {"softmax": "softmax (Transformer)", "linformer": "Linformer", "performer": "Performer"}


def side_by_side(folder: Path) -> str:
    """LRA's accuracy beside ours, one row per attention kind and FFN; the example counts."""
    paper = json.loads((folder / "paper.json").read_text())["accuracy"]
    runs = [r for r in read_csv(folder / "results" / "results.csv") if r["status"] == "done"]
    runs.sort(key=lambda r: (list(KINDS).index(r["attention"]), r["ffn_rank"] != "", r["ffn_rank"]))
    rows = []
    for run in runs:
        rank = run["ffn_rank"]
        ffn = f"factorized FFN R = {rank}" if rank else "dense FFN"
        lra = f"{paper[run['attention']]:.2f}" if not rank else "—"
        rows.append(
            [
                f"{KINDS[run['attention']]}, {ffn}",
                lra,
                f"{float(run['eval_accuracy']):.3f}",
                f"{float(run['train_accuracy']):.3f}",
                signed(float(run["train_eval_gap"])),
                f"{int(run['params_total']):,}",
                f"{float(run['median_step_time_s']):.2f}",
            ]
        )
    header = [
        "model",
        "LRA, full scale (%)",
        "ours: eval acc.",
        "train acc.",
        "gap",
        "params",
        "median step (s)",
    ]
    evals = [float(r["eval_accuracy"]) for r in runs]
    n_eval, n_train = count_of(evals), count_of(float(r["train_accuracy"]) for r in runs)
    error = stderr(sum(evals) / len(evals), n_eval)
    note = (
        f"Each accuracy is a count out of {n_eval} test trees (eval) or {n_train} training "
        f"trees (train): the smallest counts that make every accuracy in `results/results.csv` "
        f"a whole number. Sampling error (binomial, at the mean eval accuracy): ±{error:.3f}."
    )
    return markdown_table(header, rows, "lrrrrrr") + "\n\n" + prose(note)


TABLES = {"side_by_side": side_by_side}
