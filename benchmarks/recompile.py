"""The training loop compiles once and moves nothing between host and device but the batch
and the scalars it logs.

Target (issue 8, target 7): a real run of the trainer (``configs/tiny.py``)
whose step loop runs under ``jax.transfer_guard("disallow")``
(``LOWRANK_JAX_TRANSFER_GUARD``), which turns every *implicit* host<->device
transfer into an error; the trainer's only transfers are explicit
(``make_array_from_process_local_data`` for the batch, ``device_get`` of the
step's scalars where it logs, evaluates or checkpoints). Its step is traced
once (``summary.json``'s ``step_traces``) over steps with different data.

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

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.py"


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
        )
    ]


def main(argv: list[str] | None = None) -> list[dict]:
    return common.main(targets, "recompilation and transfers", __doc__, argv)


if __name__ == "__main__":
    main()
