"""Tables and plots of a sweep, from its run directories' files only.

``write_report(workdir)`` reads every ``<point>/config.json``, ``summary.json``
and ``metrics.jsonl`` (and ``failed.json``), so every number traces back to a
run directory, and writes ``results.md``, ``results.csv`` and PNG plots:
accuracy and step time against rank per attention kind (the dense model as a
dashed reference), accuracy against parameters with the Pareto front marked,
and learning curves.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

from lowrank_jax.config import ConfigError

COLUMNS = (
    "name",
    "attention",
    "ffn_rank",
    "qkv_rank",
    "lora_rank",
    "params_total",
    "params_trainable",
    "train_accuracy",
    "eval_accuracy",
    "best_eval_accuracy",
    "train_eval_gap",
    "median_step_time_s",
    "status",
)


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
            record = json.loads(failed.read_text())
            rows.append({"name": run.name, "status": f"failed: {record.get('error', '')}"})
            continue
        if not (config_path.exists() and summary_path.exists()):
            rows.append({"name": run.name, "status": "unfinished"})
            continue
        model = json.loads(config_path.read_text())["model"]
        summary = json.loads(summary_path.read_text())
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        train_accuracy = summary.get("final_train_eval_accuracy")
        if train_accuracy is None:  # no train.train_eval_batches: the last logged train batches
            train = [m["accuracy"] for m in metrics if "accuracy" in m][-5:]
            train_accuracy = sum(train) / len(train) if train else None
        eval_accuracy = summary.get("final_eval_accuracy")
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
                "eval_accuracy": eval_accuracy,
                "best_eval_accuracy": summary.get("best_eval_accuracy"),
                "train_eval_gap": None
                if train_accuracy is None or eval_accuracy is None
                else train_accuracy - eval_accuracy,
                "median_step_time_s": summary.get("median_step_time_s"),
                "status": "done",
                "curve": [(m["step"], m["eval_accuracy"]) for m in metrics if "eval_accuracy" in m],
            }
        )
    return sorted(rows, key=_order)


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
    return (0, row["attention"], row["ffn_rank"] or 0, row["qkv_rank"] or 0, row["name"])


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


def write_tables(rows: list[dict], workdir: Path) -> str:
    """results.md and results.csv; returns the Markdown table."""
    with open(workdir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    body = "".join("| " + " | ".join(_cell(row.get(c)) for c in COLUMNS) + " |\n" for row in rows)
    table = header + body
    (workdir / "results.md").write_text(
        f"# Results of {workdir.name}\n\nFrom each run's config.json, summary.json and "
        f"metrics.jsonl (`lowrank-jax report {workdir}`). Rank — = dense; train accuracy is "
        "the final model's accuracy on the first `train.train_eval_batches` training "
        "batches (eval mode), or, where that is 0, the mean of the last five logged training "
        "batches (dropout on, a moving model).\n\n" + table
    )
    return table


def _low_rank(row: dict) -> bool:
    return bool(row["ffn_rank"] or row["qkv_rank"])


RANK_SERIES = {  # which layers are low rank -> (x value, marker style)
    "FFN": (lambda r: r["ffn_rank"] if not r["qkv_rank"] else None, "o-"),
    "Q/K/V": (lambda r: r["qkv_rank"] if not r["ffn_rank"] else None, "s-."),
    "FFN + Q/K/V": (lambda r: r["ffn_rank"] if r["qkv_rank"] else None, "^:"),
}


def _rank_plot(rows, key: str, ylabel: str, path: Path) -> None:
    """One line per attention kind and low-rank group (FFN, Q/K/V, both); dense dashed."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for i, kind in enumerate(sorted({r["attention"] for r in rows})):
        color = f"C{i}"
        measured = [r for r in rows if r["attention"] == kind and r[key] is not None]
        for group, (rank_of, style) in RANK_SERIES.items():
            ranked = sorted((rank_of(r), r[key]) for r in measured if rank_of(r))
            if ranked:
                ax.plot(*zip(*ranked, strict=True), style, color=color, label=f"{kind}, {group}")
        for r in measured:
            if not _low_rank(r):
                ax.axhline(r[key], color=color, linestyle="--", label=f"{kind}, dense")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rank R")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_plots(rows: list[dict], workdir: Path) -> list[Path]:
    done = [r for r in rows if r["status"] == "done"]
    paths = [
        workdir / f"{n}.png"
        for n in ("accuracy_vs_rank", "step_time_vs_rank", "accuracy_vs_params", "learning_curves")
    ]
    _rank_plot(done, "eval_accuracy", "eval accuracy", paths[0])
    _rank_plot(done, "median_step_time_s", "median step time (s)", paths[1])

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    points = [
        (r["params_total"], r["eval_accuracy"]) for r in done if r["eval_accuracy"] is not None
    ]
    named = [r for r in done if r["eval_accuracy"] is not None]
    ax.scatter([p for p, _ in points], [a for _, a in points], color="C0", label="runs")
    front = [points[i] for i in pareto_front(points)]
    if front:
        ax.plot(*zip(*front, strict=True), "s-", color="C3", label="Pareto front")
    for (params, accuracy), row in zip(points, named, strict=True):
        ax.annotate(label(row), (params, accuracy), fontsize=7)
    ax.set_xlabel("parameters")
    ax.set_ylabel("eval accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=100)

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for row in done:
        if row["curve"]:
            ax.plot(*zip(*row["curve"], strict=True), "o-", label=label(row))
    ax.set_xlabel("step")
    ax.set_ylabel("eval accuracy")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(paths[3], dpi=100)
    return paths


def write_report(workdir: str | Path) -> tuple[str, list[Path]]:
    """Write the tables and plots of a sweep directory; returns (Markdown table, plot paths)."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise ConfigError(f"workdir: {workdir} is not a directory")
    rows = read_runs(workdir)
    if not rows:
        raise ConfigError(f"workdir: {workdir} holds no run directories")
    return write_tables(rows, workdir), write_plots(rows, workdir)
