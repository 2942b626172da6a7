"""Generated blocks of experiments/listops/README.md, from results/results.csv and paper.json."""

from __future__ import annotations

import json
from pathlib import Path

from lowrank_jax.tables import counts_note, markdown_table, read_csv, signed

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
    note = counts_note(runs, "trees", "results/results.csv")
    return markdown_table(header, rows, "lrrrrrr") + "\n\n" + note


TABLES = {"side_by_side": side_by_side}
