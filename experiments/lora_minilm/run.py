"""The LoRA paper's Table 2 on all-MiniLM-L6-v2: full, LoRA and adapters on reviews and trec.

Reads the sweeps of ``configs/lora_minilm.py`` (one run directory per task) and
writes the table: method, trainable parameters, accuracy per task, step time
and optimizer-state bytes, each also as a ratio to full fine-tuning.

    lowrank-jax sweep --config configs/lora_minilm.py:task=trec,runlocal \\
        --workdir runs/lora_minilm_trec
    lowrank-jax sweep --config configs/lora_minilm.py:task=reviews,runlocal \\
        --workdir runs/lora_minilm_reviews
    python experiments/lora_minilm/run.py \\
        --runs reviews=runs/lora_minilm_reviews trec=runs/lora_minilm_trec

Optimizer-state bytes are computed from each run's config (``nnx.eval_shape``
of the trainer's own model and optimizer, nothing allocated); where the run's
summary.json records them too, the two must agree. Step times are measured
here, side by side in one process, with the trainer's own jitted step at each
run's batch and length (``bench.EncoderStep``, ``--repeats`` steps each): the
sweeps' own step times are taken while other work may share the machine.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import ml_collections
from flax import nnx

from lowrank_jax import bench
from lowrank_jax.build import model_and_optimizer
from lowrank_jax.train import step

HERE = Path(__file__).parent


def optimizer_bytes(config: ml_collections.ConfigDict) -> int:
    """Bytes of the run's optimizer state, from shapes alone."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.pretrained = ""  # shapes only: no weights to read
    optimizer = nnx.eval_shape(lambda: model_and_optimizer(config)[1])
    return step.optimizer_state_bytes(optimizer)


def step_seconds(config: ml_collections.ConfigDict, repeats: int) -> float:
    """Median seconds of the run's training step (random weights and tokens: same work)."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.pretrained = ""
    train_step = bench.EncoderStep(
        config.model, config.train, config.train.batch_size, config.data.max_len
    )
    return train_step.seconds(repeats)


def method_of(config: ml_collections.ConfigDict) -> tuple[str, int]:
    """(row label, sort key) of a run's config: its row in the LoRA paper's Table 2."""
    model = config.model
    if model.lora.rank:
        where = "all linear" if "ffn" in model.lora.targets else "W_q, W_v"
        return f"LoRA R={model.lora.rank} ({where})", 1 + model.lora.rank + 100 * (
            where != "W_q, W_v"
        )
    if model.adapters.bottleneck:
        return f"adapters ({model.adapters.bottleneck})", 1000
    return "full fine-tuning", 0


def read_sweep(directory: Path, repeats: int = 0) -> dict[str, dict]:
    """{row label: run facts} for every finished run under ``directory``; ``repeats`` > 0
    also times each run's step here (else the sweep's own median step time is kept)."""
    rows = {}
    for summary_path in sorted(directory.glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        config = ml_collections.ConfigDict(
            json.loads((summary_path.parent / "config.json").read_text())
        )
        label, order = method_of(config)
        state_bytes = optimizer_bytes(config)
        recorded = summary.get("optimizer_state_bytes")
        if recorded is not None and recorded != state_bytes:
            raise ValueError(
                f"{summary_path}: optimizer_state_bytes {recorded} != {state_bytes} from its config"
            )
        eval_examples = config.train.eval_batches * config.train.batch_size
        rows[label] = {
            "method": label,
            "order": order,
            "params_trainable": summary["params_trainable"],
            "accuracy": summary["final_eval_accuracy"],
            "eval_examples": eval_examples,
            "step_time_s": (
                step_seconds(config, repeats) if repeats else summary["median_step_time_s"]
            ),
            "step_time_source": "measured here" if repeats else "the sweep's runs",
            "optimizer_state_bytes": state_bytes,
            "steps": config.train.steps,
            "batch_size": config.train.batch_size,
            "max_len": config.data.max_len,
        }
    return rows


def table(sweeps: dict[str, dict[str, dict]]) -> str:
    """The Markdown table, one row per method, one accuracy column per task."""
    tasks = list(sweeps)
    labels = sorted(
        {lab for rows in sweeps.values() for lab in rows},
        key=lambda lab: next(rows[lab]["order"] for rows in sweeps.values() if lab in rows),
    )
    first = tasks[0]
    full = sweeps[first].get("full fine-tuning")
    head = (
        "| method | trainable params | "
        + " | ".join(f"{t} accuracy" for t in tasks)
        + f" | step ms ({first}) | step vs full | optimizer state | state vs full |"
    )
    lines = [head, "|---|---:|" + "---:|" * len(tasks) + "---:|---:|---:|---:|"]
    for label in labels:
        row = next(rows[label] for rows in sweeps.values() if label in rows)
        accuracies = []
        for task in tasks:
            run = sweeps[task].get(label)
            if run is None or run["accuracy"] is None:
                accuracies.append("—")
                continue
            p, n = run["accuracy"], run["eval_examples"]
            accuracies.append(f"{p:.3f} ± {math.sqrt(p * (1 - p) / n):.3f}")
        mine = sweeps[first].get(label)
        seconds = mine["step_time_s"] if mine else None
        step_ms = f"{seconds * 1e3:.0f}" if seconds else "—"
        step_ratio = f"{seconds / full['step_time_s']:.2f}×" if seconds and full else "—"
        state = row["optimizer_state_bytes"]
        state_ratio = f"{state / full['optimizer_state_bytes']:.2%}" if full else "—"
        lines.append(
            f"| {label} | {row['params_trainable']:,} | {' | '.join(accuracies)} | "
            f"{step_ms} | {step_ratio} | {state / 2**20:.2f} MiB | {state_ratio} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", nargs="+", required=True, metavar="TASK=DIR", help="one sweep directory per task"
    )
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed steps per method (0: the sweep's times)"
    )
    args = parser.parse_args(argv)
    sweeps = {}
    for item in args.runs:
        task, sep, directory = item.partition("=")
        if not sep or not Path(directory).is_dir():
            parser.error(f"--runs: expected TASK=DIR with an existing DIR, got {item!r}")
        # steps are timed once, on the first task's runs (the tasks differ only in the head)
        sweeps[task] = read_sweep(Path(directory), args.repeats if not sweeps else 0)
        if not sweeps[task]:
            parser.error(f"--runs: no finished run (summary.json) under {directory}")
    text = table(sweeps)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text)
    (out / "table.json").write_text(json.dumps(sweeps, indent=1) + "\n")
    return sweeps


if __name__ == "__main__":
    main()
