"""The LoRA paper's Table 2 on all-MiniLM-L6-v2: full, LoRA and adapters on reviews and trec.

Reads the sweeps of ``configs/lora_minilm.py`` (one run directory per task) and
writes the table: method, trainable parameters, accuracy per task, step time
and optimizer-state bytes, each also as a ratio to full fine-tuning.

    lowrank-jax sweep --config configs/lora_minilm.py:task=trec,runlocal --seeds 3 \\
        --workdir runs/lora_minilm_trec
    lowrank-jax sweep --config configs/lora_minilm.py:task=reviews,runlocal --seeds 3 \\
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
import statistics
from pathlib import Path

import ml_collections
from flax import nnx

from lowrank_jax import bench
from lowrank_jax.config import load_module
from lowrank_jax.data.text import TEST_SIZES
from lowrank_jax.train import step
from lowrank_jax.train.state import model_and_optimizer

HERE = Path(__file__).parent
TABLES = load_module(HERE / "tables.py")


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
    """{row label: run facts} over every finished run under ``directory``, its seeds
    together; ``repeats`` > 0 also times each method's step here (else the median of
    its runs' own median step times is kept).

    Each run's score is its summary's ``test_accuracy``: the checkpoint selected on
    validation, scored on the whole test split.
    """
    runs: dict[str, list[tuple[dict, ml_collections.ConfigDict]]] = {}
    for summary_path in sorted(directory.glob("*/summary.json")):
        config = ml_collections.ConfigDict(
            json.loads((summary_path.parent / "config.json").read_text())
        )
        runs.setdefault(method_of(config)[0], []).append(
            (json.loads(summary_path.read_text()), config)
        )
    rows = {}
    for label, seeds in runs.items():
        summary, config = seeds[0]
        state_bytes = optimizer_bytes(config)
        for other, _ in seeds:
            recorded = other.get("optimizer_state_bytes")
            if recorded is not None and recorded != state_bytes:
                raise ValueError(
                    f"{directory}: {label}: optimizer_state_bytes {recorded} != {state_bytes} "
                    "from its config"
                )
        measured = step_seconds(config, repeats) if repeats else None
        rows[label] = {
            "method": label,
            "order": method_of(config)[1],
            "params_trainable": summary["params_trainable"],
            "seeds": [c.seed for _, c in seeds],
            "test_accuracies": [s["test_accuracy"] for s, _ in seeds],
            "best_steps": [s["best_step"] for s, _ in seeds],
            "test_examples": TEST_SIZES[config.data.name],
            "step_time_s": measured or statistics.median(s["median_step_time_s"] for s, _ in seeds),
            "step_time_source": "measured here" if repeats else "the sweep's runs",
            "optimizer_state_bytes": state_bytes,
            "steps": config.train.steps,
            "batch_size": config.train.batch_size,
            "max_len": config.data.max_len,
        }
    return rows


def table(sweeps: dict[str, dict[str, dict]]) -> str:
    """The Markdown table, one row per method, one accuracy column per task (the
    README's generated block, ``tables.ours``, from the same rows)."""
    return TABLES.ours_table(sweeps)


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
