"""Generated blocks of experiments/lora_minilm/README.md, from results/table.json and paper.json."""

from __future__ import annotations

import json
from pathlib import Path

from lowrank_jax.tables import markdown_table, prose, stderr

FULL = "full fine-tuning"


def ours(folder: Path) -> str:
    """One row per method: trainable parameters, accuracy per task, step time, optimizer state.

    The step time and the per-method columns are the first task's (the tasks differ only in
    the head), as ``run.py`` writes ``results/table.md``.
    """
    sweeps = json.loads((folder / "results" / "table.json").read_text())
    tasks = list(sweeps)
    first = sweeps[tasks[0]]
    full = first[FULL]
    rows = []
    for label in sorted(first, key=lambda label: first[label]["order"]):
        run = first[label]
        accuracies = []
        for task in tasks:
            other = sweeps[task].get(label)
            if other is None or other["accuracy"] is None:
                accuracies.append("—")
            else:
                p = other["accuracy"]
                accuracies.append(f"{p:.3f} ± {stderr(p, other['eval_examples']):.3f}")
        state = run["optimizer_state_bytes"]
        rows.append(
            [
                label,
                f"{run['params_trainable']:,}",
                *accuracies,
                f"{run['step_time_s'] * 1e3:.0f}",
                f"{run['step_time_s'] / full['step_time_s']:.2f}×",
                f"{state / 2**20:.2f} MiB",
                f"{state / full['optimizer_state_bytes']:.2%}",
            ]
        )
    header = [
        "method",
        "trainable params",
        *(f"{t} accuracy" for t in tasks),
        f"step ms ({tasks[0]})",
        "step vs full",
        "optimizer state",
        "state vs full",
    ]
    heads = ", ".join(
        f"{task}'s head adds {sweeps[task][FULL]['params_trainable'] - full['params_trainable']:,}"
        for task in tasks[1:]
    )
    caption = (
        f"`results/table.json` (trainable parameters, step time and optimizer state with the "
        f"{tasks[0]} head; {heads}); accuracy ± one binomial standard error over "
        f"{full['eval_examples']} test examples:"
    )
    return prose(caption) + "\n\n" + markdown_table(header, rows, "l" + "r" * (len(header) - 1))


def paper(folder: Path) -> str:
    """The paper's RoBERTa-base rows, as printed in its Table 2 (``paper.json``)."""

    def cell(value: list) -> str:
        mean, std = value
        return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"

    rows = [
        [r["method"], f"{r['params_millions']:.1f}M", cell(r["sst2"]), cell(r["mnli"])]
        for r in json.loads((folder / "paper.json").read_text())["rows"]
    ]
    return markdown_table(["method", "trainable params", "SST-2", "MNLI"], rows, "lrrr")


TABLES = {"ours": ours, "paper": paper}
