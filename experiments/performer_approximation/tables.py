"""Generated blocks of experiments/performer_approximation/README.md, from results/mse.json."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean, pstdev

from lowrank_jax.tables import markdown_table


def mse(folder: Path, scale: str) -> str:
    """Mean ± std over seeds of the output MSE, per feature kind (rows) and M (columns)."""
    results = json.loads((folder / "results" / "mse.json").read_text())
    by_kind = results["mse"][scale]
    features = sorted({int(m) for per_m in by_kind.values() for m in per_m})
    rows = [
        [kind, *(f"{fmean(per_m[str(m)]):.2e} ± {pstdev(per_m[str(m)]):.1e}" for m in features)]
        for kind, per_m in by_kind.items()
    ]
    spread = "I" if float(scale) == 1 else f"{float(scale):g}² I"
    caption = f"q, k ~ N(0, {spread}), {results['seeds']} seeds (mean ± std):"
    table = markdown_table(
        ["features", *(f"M = {m}" for m in features)], rows, "l" + "r" * len(features)
    )
    return caption + "\n\n" + table


TABLES = {
    "mse_0.5": lambda folder: mse(folder, "0.5"),
    "mse_1.0": lambda folder: mse(folder, "1.0"),
}
