"""Generated blocks of experiments/linformer_efficiency/README.md, from results/results.json
and paper.json (the paper's Table 3)."""

from __future__ import annotations

import json
from pathlib import Path

from lowrank_jax.tables import markdown_table, span

WHAT = {"time_saved": "time saved", "memory_saved": "memory saved"}


def _times(value: float) -> str:
    return f"{value:.1f}×"


def _printed(value: float) -> str:
    """A paper figure as printed there: two significant digits (``14×``, ``8.3×``, ``5.0×``)."""
    return f"{value:.0f}×" if value >= 10 else f"{value:.1f}×"


def grid(folder: Path, key: str) -> str:
    """``key`` (time_saved | memory_saved) for every N (rows) and P (columns); — where P ≥ N."""
    rows = json.loads((folder / "results" / "results.json").read_text())["rows"]
    lengths = sorted({r["length"] for r in rows})
    projs = sorted({r["proj_len"] for r in rows})
    cell = {(r["length"], r["proj_len"]): r[key] for r in rows}
    body = [[n, *(_times(cell[n, p]) if (n, p) in cell else "—" for p in projs)] for n in lengths]
    return markdown_table(["N", *(f"P = {p}" for p in projs)], body, "r" * (len(projs) + 1))


def paper(folder: Path) -> str:
    """The paper's rows beside ours at the same N and P."""
    table = json.loads((folder / "paper.json").read_text())
    rows = json.loads((folder / "results" / "results.json").read_text())["rows"]
    ours = {(r["length"], r["proj_len"]): r for r in rows}
    projs, body = table["proj_lens"], []
    for key, what in WHAT.items():
        for length, values in table[key].items():
            n = int(length)
            body.append([n, f"{what}, paper", *map(_printed, values)])
            body.append(
                [
                    n,
                    f"{what}, ours",
                    *(_times(ours[n, p][key]) if (n, p) in ours else "—" for p in projs),
                ]
            )
    header = ["N", "", *(f"P = {p}" for p in projs)]
    return markdown_table(header, body, "rl" + "r" * len(projs))


def paper_way(folder: Path) -> str:
    """Memory saved as the paper measures it (largest batches in 16 GiB), beside the paper."""
    record = json.loads((folder / "results" / "results.json").read_text())["paper_memory"]
    table = json.loads((folder / "paper.json").read_text())
    cell = {(r["length"], r["proj_len"]): r for r in record["rows"]}
    lengths = sorted({n for n, _ in cell})
    projs = sorted({p for _, p in cell})
    body = []
    for n in lengths:
        softmax = next(r["softmax_batch"] for (m, _), r in cell.items() if m == n)
        ours = [
            f"{cell[n, p]['memory_saved']:.1f}× ({cell[n, p]['linformer_batch']})"
            if (n, p) in cell
            else "—"
            for p in projs
        ]
        body.append([n, f"ours (Transformer: {softmax})", *ours])
        if str(n) in table["memory_saved"]:
            body.append([n, "paper", *map(_printed, table["memory_saved"][str(n)])])
    header = ["N", "", *(f"P = {p}" for p in projs)]
    ratios = [
        cell[int(n), p]["memory_saved"] / paper_value
        for n, values in table["memory_saved"].items()
        for p, paper_value in zip(table["proj_lens"], values, strict=True)
        if (int(n), p) in cell
    ]
    note = f"Ours over the paper's, in the {len(ratios)} cells both have: {span(ratios)}."
    return markdown_table(header, body, "rl" + "r" * len(projs)) + "\n\n" + note


TABLES = {
    "time_saved": lambda folder: grid(folder, "time_saved"),
    "memory_saved": lambda folder: grid(folder, "memory_saved"),
    "paper": paper,
    "paper_way": paper_way,
}
