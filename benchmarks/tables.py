"""Generated blocks of benchmarks/README.md, from results/results.json (the CPU's `make bench`),
results/round1.json (round one's, issue 8, kept to compare with),
results/lora_step.json (that target group alone, with DoRA) and results/h100.json (the
suite's full shapes on a lent H100)."""

from __future__ import annotations

import json
from pathlib import Path

from lowrank_jax.tables import markdown_table

# The mixers and peers of target 3's per-N rows (attention.py), in the table's order.
MIXERS = {
    "blocked": "blocked exact",
    "xla": "XLA exact",
    "sdpa": "PyTorch SDPA",
    "linformer": "Linformer P = 256",
    "performer": "Performer M = 256",
    "performer-pytorch": "performer-pytorch",
    "linformer-layer": "Linformer layer",
    "linformer-pytorch-layer": "`linformer` layer",
}


def _results(folder: Path, name: str) -> dict:
    return json.loads((folder / "results" / f"{name}.json").read_text())


def targets(folder: Path, name: str) -> str:
    """Every target's row as the suite wrote it, with the machine it ran on."""
    results = _results(folder, name)
    rows = []
    for row in results["rows"]:
        measured = row["measured"]
        if row.get("xla_flops") and row.get("model_flops"):
            measured += f"; XLA's FLOP count {row['xla_flops'] / row['model_flops']:.3f}× ours"
        rows.append([row["target"], measured, row["goal"], row["status"]])
    machine = results["machine"]
    versions = ", ".join(
        f"{key} {machine[key]}" for key in ("device", "jax", "flax", "torch") if key in machine
    )
    if "torch_threads" in machine:
        versions += f" ({machine['torch_threads']} threads)"
    return f"`results/{name}.json`: {versions}.\n\n" + markdown_table(
        ["target", "measured", "goal", "status"], rows
    )


def attention(folder: Path, name: str) -> str:
    """Target 3's per-N times (fwd + bwd, ms) of every mixer and peer."""
    results = _results(folder, name)
    exact = next(r for r in results["rows"] if r["target"].startswith("3."))["rows"]
    present = [k for k in MIXERS if any(r.get(k) is not None for r in exact)]

    def ms(value) -> str:
        if value is None:
            return "—"
        seconds = value["seconds"] if isinstance(value, dict) else value
        return f"{seconds * 1e3:.0f}" if seconds >= 0.1 else f"{seconds * 1e3:.2f}"

    rows = [[r["n"], *(ms(r.get(k)) for k in present)] for r in exact]
    header = ["N", *(MIXERS[k] for k in present)]
    return markdown_table(header, rows, "r" * len(header))


def changes(folder: Path) -> str:
    """Round one's ``make bench`` (results/round1.json) beside this one's, target by target."""
    round1 = _results(folder, "round1")
    before = {row["target"]: row for row in round1["rows"]}
    rows = []
    for row in _results(folder, "results")["rows"]:
        old = before.get(row["target"])
        was = "—" if old is None else f"{old['measured']} ({old['status']})"
        rows.append([row["target"], was, f"{row['measured']} ({row['status']})"])
    return markdown_table(["target", f"round one ({round1['date']})", "this run"], rows)


TABLES = {
    "cpu": lambda folder: targets(folder, "results"),
    "cpu_attention": lambda folder: attention(folder, "results"),
    "cpu_changes": changes,
    "lora_step": lambda folder: targets(folder, "lora_step"),
    "h100": lambda folder: targets(folder, "h100"),
    "h100_attention": lambda folder: attention(folder, "h100"),
}
