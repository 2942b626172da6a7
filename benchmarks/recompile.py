"""The training loop compiles once and moves nothing between host and device but the batch
and the scalars it logs.

Target 7: a real run of the trainer (``configs/tiny.py``)
whose step loop runs under ``jax.transfer_guard("disallow")``
(``LOWRANK_JAX_TRANSFER_GUARD``), which turns every *implicit* host<->device
transfer into an error; the trainer's only transfers are explicit
(``make_array_from_process_local_data`` for the batch, ``device_get`` of the
step's scalars where it logs, evaluates or checkpoints). Its step is traced
once (``summary.json``'s ``step_traces``) over steps with different data.

Target 8: on real text the step seldom waits for its batch:
``input_wait_fraction`` under 5% for the real-text configs (TREC through
MiniLM's tokenizer, with length buckets: the from-scratch ``configs/text.py``
model, and in the full form ``configs/lora_minilm.py``), its step traced at
most once per bucket length.

    python benchmarks/recompile.py
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import common
from common import target

from lowrank_jax.config import load_module
from lowrank_jax.train.trainer import TRANSFER_GUARD, train_and_evaluate

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CONFIG = CONFIGS / "tiny.py"
BUCKETS = (16, 32, 64)


def targets(quick: bool) -> list[dict]:
    module = load_module(CONFIG)
    config = module.get_config("runlocal")
    steps = 6 if quick else 40
    config.train.update(steps=steps, log_every=steps // 2, eval_every=steps, checkpoint_every=steps)
    with tempfile.TemporaryDirectory() as workdir:
        config.data.data_dir = str(Path(workdir) / "tfds")
        try:
            os.environ[TRANSFER_GUARD] = "disallow"
            summary = train_and_evaluate(config, Path(workdir) / "run")
            error = None
        except ValueError as e:  # the guard's error names the transfer
            summary, error = None, str(e).splitlines()[0]
        finally:
            del os.environ[TRANSFER_GUARD]
    traces = None if summary is None else summary["step_traces"]
    return [
        target(
            f"7. trainer ({steps} steps of configs/tiny.py): step traces, implicit transfers",
            f"failed: {error}" if error else f"{traces} trace(s), no implicit transfer",
            "1 trace, none",
            [("implicit transfers", int(error is not None), "==", 0)]
            + [("step traces", traces, "==", 1)] * (error is None),
        ),
        *input_wait_targets(quick),
    ]


def _input_wait(name: str, arg: str, steps: int) -> list[dict]:
    config = load_module(CONFIGS / name).get_config(arg)
    config.data.update(max_len=64, buckets=BUCKETS)
    config.train.update(steps=steps, log_every=steps, eval_every=0, checkpoint_every=steps)
    config.train.update(eval_batches=1, train_eval_batches=0)
    with tempfile.TemporaryDirectory() as workdir:
        summary = train_and_evaluate(config, Path(workdir) / "run")
    wait, traces = summary["input_wait_fraction"], summary["step_traces"]
    run = f"{name}:{arg}, {steps} steps, buckets {BUCKETS}"
    return [
        target(
            f"8. input wait: {run}",
            f"{wait:.1%} of the loop waiting for batches "
            f"({summary['padding_fraction']:.0%} of the token slots padding)",
            "≤ 5%",
            [("input wait fraction", wait, "<=", 0.05)],
        ),
        target(
            f"8. bucket traces: {run}",
            f"{traces} trace(s) of the step",
            f"≤ {len(BUCKETS)} (one per bucket length)",
            [("step traces", traces, "<=", len(BUCKETS))],
        ),
    ]


def input_wait_targets(quick: bool) -> list[dict]:
    rows = _input_wait("text.py", "task=trec,tokenizer=minilm,runlocal", 8 if quick else 100)
    if not quick:
        rows += _input_wait("lora_minilm.py", "task=trec", 30)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    return common.main(targets, "recompilation and transfers", __doc__, argv)


if __name__ == "__main__":
    main()
