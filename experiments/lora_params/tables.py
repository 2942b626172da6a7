"""Generated block of experiments/lora_params/README.md, from results/params.md and paper.json.

``run.py`` keeps its counts only in ``results/params.md``; the paper's column there is
ignored here and taken from ``paper.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from lowrank_jax.tables import TablesError, markdown_rows, markdown_table


def params(folder: Path) -> str:
    """The paper's trainable count beside ours (LoRA parameters and the model's total)."""
    paper = {
        (r["model"], r["rank"]): r for r in json.loads((folder / "paper.json").read_text())["rows"]
    }
    rows = []
    for model, rank, targets, _, _, exact, total in markdown_rows(
        folder / "results" / "params.md", "model"
    ):
        ours = int(exact.replace(",", ""))
        row = paper.get((model, int(rank)))
        if row is None:
            raise TablesError(f"paper.json: no row for {model} R = {rank}")
        rows.append(
            [
                model,
                rank,
                targets,
                f"{row['trainable']} ({row['table']})",
                f"{ours / 1e6:.1f}M",
                f"{ours:,}",
                total,
            ]
        )
    header = [
        "model",
        "R",
        "LoRA on",
        "paper (trainable)",
        "ours (LoRA params)",
        "ours exact",
        "total params (ours)",
    ]
    return markdown_table(header, rows, "lrlrrrr")


TABLES = {"params": params}
