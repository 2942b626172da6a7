"""Generated blocks of experiments/lora_subspace/README.md, from results/phi.json.

φ of random factors (the chance level) is not in phi.json; its measured column is read
from ``results/summary.md``, which ``run.py`` wrote in the same run. The chance level the
prose quotes is a formula, not a measurement: for independent, uniformly random subspaces
of dimensions i and j in R^in, E‖U_iᵀ U_j‖²_F = i·j / in, so E φ(i, j) = max(i, j) / in
(random Gaussian factors, as ``run.py`` draws them, have such column spaces).
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean

from lowrank_jax.tables import markdown_rows, markdown_table, prose, span

PROJECTIONS = {"query": "ΔW_q", "value": "ΔW_v"}
LOWER, UPPER = range(3), range(3, 6)  # MiniLM's layers 0-2 and 3-5, as the README reads them
WIDTH = 384  # all-MiniLM-L6-v2's hidden size: every A is [384, R] (a model fact, not a result)


def _results(folder: Path) -> dict:
    return json.loads((folder / "results" / "phi.json").read_text())


def _layers(result: dict, projection: str) -> list[str]:
    names = [n for n in result["phi"] if n.endswith("." + projection)]
    return sorted(names, key=lambda n: int(n.split(".")[0]))


def _chance(folder: Path) -> dict[tuple[str, str], str]:
    """(task, "ΔW_q" | "ΔW_v") -> the random-φ cell of ``results/summary.md``."""
    rows = markdown_rows(folder / "results" / "summary.md", "task")
    return {(row[0], row[1].split()[0]): row[5] for row in rows}


def chance(i: int, j: int, width: int = WIDTH) -> float:
    """E φ(i, j) of independent random subspaces of R^width: max(i, j) / width (a formula).

    >>> round(chance(1, 64), 3), round(chance(8, 8), 4)
    (0.167, 0.0208)
    """
    return max(i, j) / width


def top_phi(result: dict, projection: str) -> list[float]:
    """φ(1, 64) per layer: the top direction of A_8 against all of A_64."""
    return [result["phi"][n][0][-1] for n in _layers(result, projection)]


def means(folder: Path) -> str:
    """Means over the layers per task and projection, as ``results/summary.md``."""
    results, random_phi, rows = _results(folder), _chance(folder), []
    for task, result in results.items():
        for projection, label in PROJECTIONS.items():
            names = _layers(result, projection)
            grids = [result["phi"][n] for n in names]
            small = [v for g in grids for row in g for v in row[:8]]
            moved = [result["moved"][n] for n in names]
            rows.append(
                [
                    task,
                    f"{label} (mean of {len(names)} layers)",
                    f"{fmean(g[0][0] for g in grids):.3f}",
                    f"{fmean(g[0][-1] for g in grids):.3f}",
                    f"{fmean(small):.3f}",
                    random_phi[(task, label)],
                    f"{fmean(m['8'] for m in moved):.3f}",
                    f"{fmean(m['64'] for m in moved):.3f}",
                ]
            )
    header = [
        "task",
        "projection",
        "φ(1, 1)",
        "φ(1, 64)",
        "mean φ(i ≤ 8, j ≤ 8)",
        "random φ(i ≤ 8, j ≤ 8)",
        "‖A−A₀‖/‖A₀‖ R=8",
        "R=64",
    ]
    return markdown_table(header, rows, "llrrrrrr")


def per_layer(folder: Path) -> str:
    """φ(1, 64) per layer 0 → 5, per task and projection; the chance level by formula."""
    caption = (
        f"The top direction of A_8 against all of A_64, per layer 0 → 5, φ(1, 64) (chance "
        f"level 64/{WIDTH} = {chance(1, 64):.2f}: the formula max(i, j)/{WIDTH} for "
        f"independent random subspaces, not a measurement):"
    )
    rows = [
        [task, *(", ".join(f"{v:.2f}" for v in top_phi(result, p)) for p in PROJECTIONS)]
        for task, result in _results(folder).items()
    ]
    return prose(caption) + "\n\n" + markdown_table(["task", *PROJECTIONS.values()], rows)


def ranges(folder: Path) -> str:
    """The ranges the README's reading quotes, over both tasks and projections."""
    results = _results(folder)
    tops = [top_phi(r, p) for r in results.values() for p in PROJECTIONS]
    moved8 = [
        fmean(r["moved"][n]["8"] for n in _layers(r, p))
        for r in results.values()
        for p in PROJECTIONS
    ]
    small = [
        fmean(v for n in _layers(r, p) for row in r["phi"][n] for v in row[:8])
        for r in results.values()
        for p in PROJECTIONS
    ]
    measured = [float(c) for c in _chance(folder).values()]
    formula = fmean(chance(i, j) for i in range(1, 9) for j in range(1, 9))
    upper = [t[i] for t in tops for i in UPPER]
    lower = [t[i] for t in tops for i in LOWER]
    lower_q = [v for r in results.values() for i, v in enumerate(top_phi(r, "query")) if i in LOWER]
    layers = f"{LOWER[0]}–{LOWER[-1]}"
    return "\n".join(
        [
            f"- ‖A − A₀‖ / ‖A₀‖ at R = 8 (layer means): {span(moved8, '.0%')}",
            f"- mean φ(i ≤ 8, j ≤ 8): {span(small, '.2f')}; random factors: "
            f"{span(measured, '.3f')} (measured, `results/summary.md`; the formula "
            f"max(i, j)/{WIDTH} averages {formula:.3f} over the same cells)",
            f"- φ(1, 64) in layers {UPPER[0]}–{UPPER[-1]}: {span(upper, '.2f')} "
            f"(above 0.5 in {sum(v > 0.5 for v in upper)} of these {len(upper)}); "
            f"in layers {layers}: {span(lower, '.2f')}, of ΔW_q alone {span(lower_q, '.2f')} "
            f"(chance level {chance(1, 64):.2f})",
        ]
    )


TABLES = {"means": means, "per_layer": per_layer, "ranges": ranges}
