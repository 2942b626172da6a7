"""Tables and plots of a sweep, from its run directories' files only.

``write_report(workdir)`` reads every ``<point>/config.json``, ``summary.json``
and ``metrics.jsonl`` (and ``failed.json``), so every number traces back to a
run directory. Runs that differ only in ``seed`` are one *point*: every metric
is aggregated over its seeds as mean, standard deviation, n and a 95%
confidence interval of the mean (Student t, n - 1 degrees of freedom); a point
with one seed has n = 1 and no interval. It writes ``results.md`` and
``results.csv`` (one row per point), ``runs.csv`` (one per run) and the plots
of ``plots.write_plots``.

Convergence is diagnosed per point: how many of its runs kept their last
evaluation as their best (``stats.convergence``: such a run may still be
improving) and the validation change over their last three evaluations. A
point where most runs kept their last evaluation is marked "still improving"
in ``results.md`` and the plots, and ``Report.warnings`` has one line for it.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lowrank_jax.config import ConfigError
from lowrank_jax.sweeps.plots import IMPROVING, label, pareto_front, write_plots
from lowrank_jax.sweeps.stats import convergence, improving_warning, interval, still_improving
from lowrank_jax.train.metrics import read_json, read_jsonl

__all__ = ["Report", "aggregate", "label", "pareto_front", "point_of", "read_runs", "write_report"]

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
    "val_change_last3",  # validation accuracy at the last evaluation minus three before
)
COLUMNS = (*KEYS, *METRICS, "best_step", "last_eval_step", "status")  # runs.csv: one per run


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
        curve = [(m["step"], m["val_accuracy"]) for m in metrics if "val_accuracy" in m]
        progress = convergence(curve, summary.get("best_step"))
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
                "val_change_last3": progress["recent_change"],
                "best_step": summary.get("best_step"),
                "last_eval_step": progress["last_step"],
                "best_is_last": progress["best_is_last"],
                "status": "done",
                "seed": config.get("seed"),
                "point": point_of(run.name),
                "curve": curve,
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
        k, judged, flagged = still_improving([r["best_is_last"] for r in done])
        row["improving_runs"], row["judged_runs"] = k, judged
        row["best_at_last_eval"] = f"{k} of {judged}" if judged else None
        row["still_improving"] = flagged
        row["best_steps"] = [r["best_step"] for r in done]
        row["seeds"] = sorted(r["seed"] for r in done if r.get("seed") is not None)
        out.append(row)
    return sorted(out, key=_order)


def _mean_curve(curves: list[list]) -> list:
    """The mean eval curve over seeds, at the steps every seed evaluated."""
    steps = sorted(set.intersection(*(set(s for s, _ in c) for c in curves))) if curves else []
    return [(step, float(np.mean([dict(c)[step] for c in curves]))) for step in steps]


def _order(row: dict) -> tuple:
    """Finished runs first, by attention kind, dense before low rank, then by rank."""
    if row["status"] != "done":
        return (1, row["name"])
    ranks = (row["ffn_rank"] or 0, row["qkv_rank"] or 0, row["lora_rank"] or 0)
    return (0, row["attention"], *ranks, row["name"])


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
    convergence_columns = ("best_at_last_eval", "still_improving")
    with open(workdir / "results.csv", "w", newline="") as f:
        fields = (*KEYS, "n", *stats, *convergence_columns, "status")
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(points)
    columns = (*KEYS, "n", *METRICS, "best_at_last_eval", "status")
    header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join(
        "| "
        + " | ".join(_stat_cell(row, c) if c in METRICS else _cell(row.get(c)) for c in columns)
        + " |\n"
        for row in ({**p, "best_at_last_eval": _convergence_cell(p)} for p in points)
    )
    table = header + body
    warnings = "".join(f"- {line}\n" for line in improving_warnings(points))
    (workdir / "results.md").write_text(
        f"# Results of {workdir.name}\n\nFrom each run's config.json, summary.json and "
        f"metrics.jsonl (`lowrank-jax report {workdir}`). One row per point: runs that "
        "differ only in their seed are aggregated, each metric as mean ± the half-width of "
        "its 95% confidence interval (Student t over the n seeds; a point with n = 1 shows "
        "its one value, with no interval); results.csv adds each standard deviation, "
        "runs.csv has every run. Rank — = dense. Each run's model is its best checkpoint on the "
        "validation split (val_accuracy, the selection); test_accuracy scores it on the whole "
        "test split; train_accuracy is its accuracy (eval mode) on the first "
        "`train.train_eval_batches` batches of its training order. best_at_last_eval: of the "
        "runs, how many kept their last evaluation as their best (they may still be improving; "
        "a point where most did is marked still improving); val_change_last3: validation "
        "accuracy at the last evaluation minus three evaluations before.\n\n"
        + table
        + (f"\n## Still improving\n\n{warnings}" if warnings else "")
    )
    return table


def _convergence_cell(point: dict) -> str | None:
    cell = point.get("best_at_last_eval")
    return f"{cell}: {IMPROVING}" if cell and point.get("still_improving") else cell


def improving_warnings(points: list[dict]) -> list[str]:
    """One line per point where most runs may still be improving (``stats.still_improving``)."""
    return [
        improving_warning(p["name"], p["improving_runs"], p["judged_runs"])
        for p in points
        if p.get("still_improving")
    ]


class Report(NamedTuple):
    table: str  # results.md's table
    plots: list[Path]
    warnings: list[str]  # one line per point that may still be improving


def write_report(workdir: str | Path) -> Report:
    """Write the tables and plots of a sweep directory."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise ConfigError(f"workdir: {workdir} is not a directory")
    if (workdir / "config.json").exists():
        raise ConfigError(f"workdir: {workdir} is one run's directory; report reads a sweep's")
    runs = read_runs(workdir)
    if not runs:
        raise ConfigError(f"workdir: {workdir} holds no run directories")
    points = aggregate(runs)
    table = write_tables(runs, points, workdir)
    return Report(table, write_plots(points, workdir), improving_warnings(points))
