"""Tables and plots of a sweep, from its run directories' files only.

``write_report(workdir)`` reads every ``<point>/config.json``, ``summary.json``
and ``metrics.jsonl`` (and ``failed.json``), so every number traces back to a
run directory. Runs that differ only in ``seed`` are one *point*: every metric
is aggregated over its seeds as mean, standard deviation, n and a 95%
confidence interval of the mean (Student t, n - 1 degrees of freedom); a point
with one seed has n = 1 and no interval. It writes ``results.md`` and
``results.csv`` (one row per point), ``runs.csv`` (one per run) and PNG plots
of the means with their interval bars: accuracy and step time against rank per
attention kind (the dense model as a dashed reference), accuracy against
parameters with the Pareto front (of the means) marked, and learning curves.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

from lowrank_jax.config import ConfigError
from lowrank_jax.stats import interval
from lowrank_jax.train.metrics import read_json, read_jsonl

KEYS = (
    "name",
    "attention",
    "ffn_rank",
    "qkv_rank",
    "lora_rank",
    "params_total",
    "params_trainable",
)
METRICS = (
    "train_accuracy",  # the selected model on a fixed sample of its training examples
    "val_accuracy",  # the best validation accuracy: the one that selected the model
    "test_accuracy",  # the selected model on the whole test split
    "train_test_gap",
    "final_train_accuracy",  # the same for the final model (overfitting shows here)
    "final_test_accuracy",
    "final_train_test_gap",
    "median_step_time_s",
)
COLUMNS = (*KEYS, *METRICS, "status")  # runs.csv: one row per run


def _rank(dense: dict) -> int | None:
    return dense.get("rank") if dense.get("kind") == "factorized" else None


def read_runs(workdir: str | Path) -> list[dict]:
    """One row per run directory (finished, failed or unfinished), in ``_order``."""
    rows = []
    for run in sorted(p for p in Path(workdir).iterdir() if p.is_dir()):
        config_path, summary_path, failed = (
            run / n for n in ("config.json", "summary.json", "failed.json")
        )
        if failed.exists():
            record = read_json(failed)
            rows.append({"name": run.name, "status": f"failed: {record.get('error', '')}"})
            continue
        if not (config_path.exists() and summary_path.exists()):
            rows.append({"name": run.name, "status": "unfinished"})
            continue
        config = read_json(config_path)
        model = config["model"]
        summary = read_json(summary_path)
        metrics = read_jsonl(run / "metrics.jsonl")
        train_accuracy = summary.get("train_accuracy")
        test_accuracy = summary.get("test_accuracy")
        final_train, final_test = (summary.get(f"final_{k}_accuracy") for k in ("train", "test"))
        rows.append(
            {
                "name": run.name,
                "attention": model["attention"]["kind"],
                "ffn_rank": _rank(model["ffn"]["dense"]),
                "qkv_rank": _rank(model["attention"]["dense"]),
                "lora_rank": model.get("lora", {}).get("rank") or None,
                "params_total": summary["params_total"],
                "params_trainable": summary["params_trainable"],
                "train_accuracy": train_accuracy,
                "val_accuracy": summary.get("best_val_accuracy"),
                "test_accuracy": test_accuracy,
                "train_test_gap": None
                if train_accuracy is None or test_accuracy is None
                else train_accuracy - test_accuracy,
                "final_train_accuracy": final_train,
                "final_test_accuracy": final_test,
                "final_train_test_gap": None
                if final_train is None or final_test is None
                else final_train - final_test,
                "median_step_time_s": summary.get("median_step_time_s"),
                "status": "done",
                "seed": config.get("seed"),
                "point": point_of(run.name),
                "curve": [(m["step"], m["val_accuracy"]) for m in metrics if "val_accuracy" in m],
            }
        )
    return sorted(rows, key=_order)


def point_of(name: str) -> str:
    """A run's point: its name without the ``seed=N`` part (``base`` if nothing is left).

    Example:
      >>> point_of("ffn.dense.rank=8,seed=2"), point_of("seed=0")
      ('ffn.dense.rank=8', 'base')
    """
    parts = [part for part in name.split(",") if not re.fullmatch(r"seed=\d+", part)]
    return ",".join(parts) or "base"


def aggregate(rows: list[dict]) -> list[dict]:
    """One row per point: its keys, and for every metric ``<metric>`` (the mean),
    ``<metric>_std``, ``<metric>_ci95`` over its finished seeds, ``n`` the seeds.

    A point none of whose runs finished keeps the status of its first run.
    """
    points: dict[str, list[dict]] = {}
    for row in rows:
        points.setdefault(row.get("point") or point_of(row["name"]), []).append(row)
    out = []
    for name, runs in points.items():
        done = [r for r in runs if r["status"] == "done"]
        if not done:
            out.append({**runs[0], "name": name, "n": 0})
            continue
        row = {key: done[0][key] for key in KEYS} | {"name": name, "status": "done"}
        row["n"] = len(done)
        for metric in METRICS:
            values = [r[metric] for r in done if r[metric] is not None]
            stats = interval(values) if values else {"mean": None, "std": None, "ci95": None}
            row[metric], row[f"{metric}_std"], row[f"{metric}_ci95"] = (
                stats["mean"],
                stats["std"],
                stats["ci95"],
            )
        row["curve"] = _mean_curve([r["curve"] for r in done])
        row["seeds"] = sorted(r["seed"] for r in done if r.get("seed") is not None)
        out.append(row)
    return sorted(out, key=_order)


def _mean_curve(curves: list[list]) -> list:
    """The mean eval curve over seeds, at the steps every seed evaluated."""
    steps = sorted(set.intersection(*(set(s for s, _ in c) for c in curves))) if curves else []
    return [(step, float(np.mean([dict(c)[step] for c in curves]))) for step in steps]


def label(row: dict) -> str:
    """A short plot label: ``softmax, R=4`` (FFN rank), ``qkv R=8``, ``dense``, ``+LoRA 8``."""
    parts = [row["attention"]]
    if row["ffn_rank"]:
        parts.append(f"R={row['ffn_rank']}")
    if row["qkv_rank"]:
        parts.append(f"qkv R={row['qkv_rank']}")
    if not _low_rank(row):
        parts.append("dense")
    if row["lora_rank"]:
        parts.append(f"LoRA {row['lora_rank']}")
    return ", ".join(parts)


def _order(row: dict) -> tuple:
    """Finished runs first, by attention kind, dense before low rank, then by rank."""
    if row["status"] != "done":
        return (1, row["name"])
    ranks = (row["ffn_rank"] or 0, row["qkv_rank"] or 0, row["lora_rank"] or 0)
    return (0, row["attention"], *ranks, row["name"])


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other beats: fewer (or equal) parameters and higher accuracy.

    Example:
      >>> pareto_front([(10, 0.5), (20, 0.4), (30, 0.7), (5, 0.2)])
      [3, 0, 2]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _stat_cell(row: dict, metric: str) -> str:
    """``mean ± ci95`` (n >= 2), ``mean`` alone for n = 1, — when not measured."""
    mean, ci95 = row.get(metric), row.get(f"{metric}_ci95")
    if mean is None:
        return "—"
    return f"{mean:.4f} ± {ci95:.4f}" if ci95 is not None else f"{mean:.4f}"


def write_tables(runs: list[dict], points: list[dict], workdir: Path) -> str:
    """results.md, results.csv (points) and runs.csv (runs); returns the Markdown table."""
    with open(workdir / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=("seed", *COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(runs)
    stats = [f"{m}{suffix}" for m in METRICS for suffix in ("", "_std", "_ci95")]
    with open(workdir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=(*KEYS, "n", *stats, "status"), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(points)
    columns = (*KEYS, "n", *METRICS, "status")
    header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join(
        "| "
        + " | ".join(_stat_cell(row, c) if c in METRICS else _cell(row.get(c)) for c in columns)
        + " |\n"
        for row in points
    )
    table = header + body
    (workdir / "results.md").write_text(
        f"# Results of {workdir.name}\n\nFrom each run's config.json, summary.json and "
        f"metrics.jsonl (`lowrank-jax report {workdir}`). One row per point: runs that "
        "differ only in their seed are aggregated, each metric as mean ± the half-width of "
        "its 95% confidence interval (Student t over the n seeds; a point with n = 1 shows "
        "its one value, with no interval); results.csv adds each standard deviation, "
        "runs.csv has every run. Rank — = dense. Each run's model is its best checkpoint on the "
        "validation split (val_accuracy, the selection); test_accuracy scores it on the whole "
        "test split; train_accuracy is its accuracy (eval mode) on the first "
        "`train.train_eval_batches` batches of its training order.\n\n" + table
    )
    return table


def _low_rank(row: dict) -> bool:
    return bool(row["ffn_rank"] or row["qkv_rank"] or row["lora_rank"])


RANK_SERIES = {  # which layers are low rank -> (x value, marker style)
    "FFN": (lambda r: r["ffn_rank"] if not r["qkv_rank"] else None, "o-"),
    "Q/K/V": (lambda r: r["qkv_rank"] if not r["ffn_rank"] else None, "s-."),
    "FFN + Q/K/V": (lambda r: r["ffn_rank"] if r["qkv_rank"] else None, "^:"),
    "LoRA": (lambda r: r["lora_rank"] if not (r["ffn_rank"] or r["qkv_rank"]) else None, "d-"),
}


def _rank_plot(rows, key: str, ylabel: str, path: Path) -> None:
    """Means with 95% interval bars, one line per attention kind and low-rank group
    (FFN, Q/K/V, both); the dense model dashed, its interval shaded."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
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
            if not _low_rank(r):
                ax.axhline(r[key], color=color, linestyle="--", label=f"{kind}, dense")
                if r.get(f"{key}_ci95"):
                    half = r[f"{key}_ci95"]
                    ax.axhspan(r[key] - half, r[key] + half, color=color, alpha=0.1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rank R")
    ax.set_ylabel(f"{ylabel} (mean, 95% CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_plots(points: list[dict], workdir: Path) -> list[Path]:
    done = [r for r in points if r["status"] == "done"]
    paths = [
        workdir / f"{n}.png"
        for n in ("accuracy_vs_rank", "step_time_vs_rank", "accuracy_vs_params", "learning_curves")
    ]
    _rank_plot(done, "test_accuracy", "test accuracy", paths[0])
    _rank_plot(done, "median_step_time_s", "median step time (s)", paths[1])

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    named = [r for r in done if r["test_accuracy"] is not None]
    points_xy = [(r["params_total"], r["test_accuracy"]) for r in named]
    bars = [r.get("test_accuracy_ci95") or 0.0 for r in named]
    if points_xy:
        x, y = zip(*points_xy, strict=True)
        ax.errorbar(x, y, yerr=bars, fmt="o", color="C0", capsize=3, label="points (mean, 95% CI)")
    front = [points_xy[i] for i in pareto_front(points_xy)]
    if front:
        ax.plot(*zip(*front, strict=True), "s-", color="C3", label="Pareto front (means)")
    for (params, accuracy), row in zip(points_xy, named, strict=True):
        ax.annotate(label(row), (params, accuracy), fontsize=7)
    ax.set_xlabel("parameters")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=100)

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for row in done:
        if row["curve"]:
            ax.plot(*zip(*row["curve"], strict=True), "o-", label=f"{label(row)} (n={row['n']})")
    ax.set_xlabel("step")
    ax.set_ylabel("validation accuracy (mean over seeds)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(paths[3], dpi=100)
    return paths


def write_report(workdir: str | Path) -> tuple[str, list[Path]]:
    """Write the tables and plots of a sweep directory; returns (Markdown table, plot paths)."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise ConfigError(f"workdir: {workdir} is not a directory")
    if (workdir / "config.json").exists():
        raise ConfigError(f"workdir: {workdir} is one run's directory; report reads a sweep's")
    runs = read_runs(workdir)
    if not runs:
        raise ConfigError(f"workdir: {workdir} holds no run directories")
    points = aggregate(runs)
    return write_tables(runs, points, workdir), write_plots(points, workdir)
