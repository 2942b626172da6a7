"""A sweep's plots (``report.write_report`` calls ``write_plots``), from its aggregated points.

Means with their 95% interval bars: accuracy and step time against rank per
attention kind (the dense model as a dashed reference), accuracy against
*trainable* parameters on a log axis with the Pareto front of the means, and
the mean validation curve of every point. A point whose runs may still be
improving (``report``'s convergence diagnosis) is marked in each: a red ring,
a dashed curve and "(still improving)" in its label.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

IMPROVING = "still improving"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other beats: fewer (or equal) parameters and higher accuracy.

    Example:
      >>> pareto_front([(10, 0.5), (20, 0.4), (30, 0.7), (5, 0.2)])
      [3, 0, 2]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -float("inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def low_rank(row: dict) -> bool:
    return bool(row["ffn_rank"] or row["qkv_rank"] or row["lora_rank"])


def label(row: dict) -> str:
    """A short plot label: ``softmax, R=4`` (FFN rank), ``qkv R=8``, ``dense``, ``+LoRA 8``."""
    parts = [row["attention"]]
    if row["ffn_rank"]:
        parts.append(f"R={row['ffn_rank']}")
    if row["qkv_rank"]:
        parts.append(f"qkv R={row['qkv_rank']}")
    if not low_rank(row):
        parts.append("dense")
    if row["lora_rank"]:
        parts.append(f"LoRA {row['lora_rank']}")
    return ", ".join(parts)


def _marked(row: dict) -> str:
    return label(row) + (f" ({IMPROVING})" if row.get("still_improving") else "")


def _ring(ax, x: float, y: float) -> None:
    """The mark of a point whose runs may still be improving (in the legend once)."""
    first = IMPROVING not in ax.get_legend_handles_labels()[1]
    ax.plot([x], [y], "o", markersize=12, markerfacecolor="none", markeredgecolor="red",
            label=IMPROVING if first else None)  # fmt: skip


def _axes():
    fig = Figure(figsize=(6, 4))
    return fig, fig.subplots()


def _save(fig, ax, path: Path, fontsize: int = 8) -> None:
    ax.legend(fontsize=fontsize)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


RANK_SERIES = {  # which layers are low rank -> (x value, marker style)
    "FFN": (lambda r: r["ffn_rank"] if not r["qkv_rank"] else None, "o-"),
    "Q/K/V": (lambda r: r["qkv_rank"] if not r["ffn_rank"] else None, "s-."),
    "FFN + Q/K/V": (lambda r: r["ffn_rank"] if r["qkv_rank"] else None, "^:"),
    "LoRA": (lambda r: r["lora_rank"] if not (r["ffn_rank"] or r["qkv_rank"]) else None, "d-"),
}


def _rank_plot(rows, key: str, ylabel: str, path: Path) -> None:
    """Means with 95% interval bars, one line per attention kind and low-rank group
    (FFN, Q/K/V, both); the dense model dashed, its interval shaded."""
    fig, ax = _axes()
    for i, kind in enumerate(sorted({r["attention"] for r in rows})):
        color = f"C{i}"
        measured = [r for r in rows if r["attention"] == kind and r[key] is not None]
        for group, (rank_of, style) in RANK_SERIES.items():
            ranked = sorted(
                (rank_of(r), r[key], r.get(f"{key}_ci95") or 0.0) for r in measured if rank_of(r)
            )
            if ranked:
                x, y, bars = zip(*ranked, strict=True)
                ax.errorbar(x, y, yerr=bars, fmt=style, color=color, capsize=3)
                ax.plot([], [], style, color=color, label=f"{kind}, {group}")
            for r in measured:
                if rank_of(r) and r.get("still_improving"):
                    _ring(ax, rank_of(r), r[key])
        for r in measured:
            if not low_rank(r):
                ax.axhline(r[key], color=color, linestyle="--", label=f"{kind}, dense")
                if r.get(f"{key}_ci95"):
                    half = r[f"{key}_ci95"]
                    ax.axhspan(r[key] - half, r[key] + half, color=color, alpha=0.1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rank R")
    ax.set_ylabel(f"{ylabel} (mean, 95% CI)")
    _save(fig, ax, path)


def _params_plot(rows, path: Path) -> None:
    """Test accuracy against trainable parameters (log axis), the Pareto front of the means."""
    fig, ax = _axes()
    named = [r for r in rows if r["test_accuracy"] is not None]
    points_xy = [(r["params_trainable"], r["test_accuracy"]) for r in named]
    bars = [r.get("test_accuracy_ci95") or 0.0 for r in named]
    if points_xy:
        x, y = zip(*points_xy, strict=True)
        ax.errorbar(x, y, yerr=bars, fmt="o", color="C0", capsize=3, label="points (mean, 95% CI)")
    front = [points_xy[i] for i in pareto_front(points_xy)]
    if front:
        ax.plot(*zip(*front, strict=True), "s-", color="C3", label="Pareto front (means)")
    for (params, accuracy), row in zip(points_xy, named, strict=True):
        ax.annotate(label(row), (params, accuracy), fontsize=7)
        if row.get("still_improving"):
            _ring(ax, params, accuracy)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("test accuracy")
    _save(fig, ax, path)


def _curves_plot(rows, path: Path) -> None:
    """Each point's mean validation curve; a point still improving is dashed."""
    fig, ax = _axes()
    for row in rows:
        if row["curve"]:
            style = "o--" if row.get("still_improving") else "o-"
            ax.plot(*zip(*row["curve"], strict=True), style, markersize=3,
                    label=f"{_marked(row)} (n={row['n']})")  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("validation accuracy (mean over seeds)")
    _save(fig, ax, path, fontsize=6)


def write_plots(points: list[dict], workdir: Path) -> list[Path]:
    """The four plots of a sweep's finished points; returns their paths."""
    done = [r for r in points if r["status"] == "done"]
    names = ("accuracy_vs_rank", "step_time_vs_rank", "accuracy_vs_params", "learning_curves")
    paths = [workdir / f"{name}.png" for name in names]
    _rank_plot(done, "test_accuracy", "test accuracy", paths[0])
    _rank_plot(done, "median_step_time_s", "median step time (s)", paths[1])
    _params_plot(done, paths[2])
    _curves_plot(done, paths[3])
    return paths
