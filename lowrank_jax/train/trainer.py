"""The one trainer: ``train_and_evaluate(config, workdir)``.

config -> validation (every field, before any compute) -> mesh -> model and
optimizer state placed by logical-axis rules -> resume from the newest good
checkpoint -> jitted steps over this process's rows of each global batch ->
metrics.jsonl / TensorBoard / progress bar, evaluations, checkpoints ->
summary.json. The same code runs on 1 CPU, a GPU/TPU mesh, or several hosts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from lowrank_jax import build, data
from lowrank_jax.build import load_model, validate
from lowrank_jax.config import ConfigError
from lowrank_jax.train import sharding
from lowrank_jax.train.checkpoint import Checkpointer
from lowrank_jax.train.metrics import (
    MetricsWriter,
    matmul_peak_flops,
    peak_memory_bytes,
    write_json,
)

__all__ = ["NonFiniteLossError", "load_model", "train_and_evaluate", "validate"]

RUN_FILES = ("checkpoints", "metrics.jsonl", "tensorboard", "summary.json", "config.json")
# For subprocess tests: SIGKILL this process right after finishing step N (a callback
# registered at start, see ``callbacks_from_env``).
KILL_AT_STEP = "LOWRANK_JAX_KILL_AT_STEP"
# jax.transfer_guard level for the training loop (allow | log | disallow): "disallow"
# makes any implicit host<->device transfer in the loop an error (benchmarks/recompile.py).
TRANSFER_GUARD = "LOWRANK_JAX_TRANSFER_GUARD"
# ``callback(step, state)`` after every step (``step`` counts finished steps); the
# state may still be computing (block on it if you need its values).
Callback = Callable[[int, nnx.State], None]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before saving that state."""


def callbacks_from_env() -> list[Callback]:
    """Test hooks the subprocess tests switch on by environment (``KILL_AT_STEP``)."""
    kill_at = int(os.environ.get(KILL_AT_STEP, "-1"))
    if kill_at < 0:
        return []

    def kill(done: int, state) -> None:
        if done == kill_at:
            jax.block_until_ready(state)
            os.kill(os.getpid(), signal.SIGKILL)

    return [kill]


def _say(message: str) -> None:
    if jax.process_index() == 0:
        print(message, file=sys.stderr, flush=True)


def _first_difference(old, new, prefix: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {old!r} -> {new!r}"


def _check_workdir(workdir: Path, config_dict: dict, force: bool) -> None:
    """Refuse a workdir that holds a run of another config, unless ``force`` (then clear it)."""
    path = workdir / "config.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    if old == config_dict:
        return
    if not force:
        raise ConfigError(
            f"workdir {workdir} holds a run of a different config "
            f"({_first_difference(old, config_dict)}); "
            "use --force to replace it, or another --workdir"
        )
    if jax.process_index() == 0:
        for name in RUN_FILES:
            target = workdir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()


def _fingerprint(params: nnx.State) -> str:
    """SHA-256 of all parameter bytes (gathered from every process), to compare runs bitwise."""
    digest = hashlib.sha256()
    for path, value in sorted(nnx.to_flat_state(params), key=lambda item: str(item[0])):
        array = value.get_value() if isinstance(value, nnx.Variable) else value
        if jax.process_count() > 1:
            array = multihost_utils.process_allgather(array, tiled=True)
        digest.update(str(path).encode())
        digest.update(np.asarray(array).tobytes())
    return digest.hexdigest()


def _evaluate(eval_step, state, config, mesh, source, batches: int, prefix: str = "eval"):
    """Mean metrics over the first ``batches`` batches of ``source`` (rewound each time)."""
    source.set_state({"step": 0})  # every evaluation reads the same batches
    results = jax.device_get(
        [
            eval_step(state, sharding.place_batch(next(source), mesh, config.train.batch_size))
            for _ in range(batches)
        ]
    )
    means = {key: float(np.mean([r[key] for r in results])) for key in results[0]}
    return {f"{prefix}_{key}": value for key, value in means.items()}


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    force: bool = False,
    callbacks: Sequence[Callback] = (),
) -> dict:
    """Train ``config`` in ``workdir`` (resuming if it holds this run) and return the summary.

    ``callbacks``: ``callback(step, state)`` after every step (see ``Callback``).
    """
    validate(config)
    workdir = Path(workdir)
    config_dict = json.loads(config.to_json_best_effort(sort_keys=True))
    _check_workdir(workdir, config_dict, force)
    callbacks = [*callbacks, *callbacks_from_env()]

    train_cfg, batch_size = config.train, config.train.batch_size
    mesh = sharding.make_mesh(config.mesh)
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / "config.json", config_dict)

    run = build.train_state(config, mesh)
    state, train_step, eval_step = run.state, run.train_step, run.eval_step
    flops_per_step = 6 * run.macs_per_token * batch_size * config.data.max_len

    rows = sharding.local_rows(mesh, batch_size)
    source, eval_source = (
        data.make_source(
            config.data, split=split, batch_size=batch_size, rows=rows, seed=config.seed
        )
        for split in ("train", "eval")
    )
    checkpointer = Checkpointer(workdir / "checkpoints", keep=train_cfg.keep_checkpoints)
    start = 0
    restored = checkpointer.restore_latest(state)
    if restored is not None:
        start, state, data_state = restored
        source.set_state(data_state)
        summary_path = workdir / "summary.json"
        if start == train_cfg.steps and summary_path.exists():  # finished: nothing to redo
            checkpointer.close()
            return json.loads(summary_path.read_text())
        _say(f"resuming {workdir} from step {start}")

    peak_flops = train_cfg.peak_flops or matmul_peak_flops()
    writer = MetricsWriter(workdir, total_steps=train_cfg.steps, start_step=start)
    last_saved = start if restored is not None else None
    guard = jax.transfer_guard(os.environ.get(TRANSFER_GUARD, "allow"))
    try:
        guard.__enter__()
        # Steps are dispatched without waiting; the host syncs (one explicit transfer of
        # the step's scalars) only where it needs them: the first step (its compilation
        # timed apart), and steps that log, evaluate, checkpoint or end the run.
        window_start, window_began = start, time.perf_counter()
        for index in range(start, train_cfg.steps):
            batch = sharding.place_batch(next(source), mesh, batch_size)
            state, metrics = train_step(state, batch)
            done = index + 1
            logs = done % train_cfg.log_every == 0
            evaluates = bool(train_cfg.eval_every) and done % train_cfg.eval_every == 0
            saves = done % train_cfg.checkpoint_every == 0 or done == train_cfg.steps
            writer.advance()
            if index == start or logs or evaluates or saves:
                metrics = jax.device_get(metrics)  # waits for the step
                now = time.perf_counter()
                seconds = (now - window_began) / (done - window_start)
                if index > start:  # the first step's window holds its compilation
                    writer.step_time(seconds)
                window_start, window_began = done, now
                loss = float(metrics["loss"])
                if not math.isfinite(loss):
                    raise NonFiniteLossError(
                        f"non-finite loss ({loss}) by step {done}; stopped without saving it "
                        f"(last checkpoint: {last_saved if last_saved is not None else 'none'})"
                    )
                record = {}
                if logs or done == train_cfg.steps:
                    record = {key: float(value) for key, value in metrics.items()}
                    record.update(
                        step_time_s=seconds,
                        tokens_per_s=batch_size * config.data.max_len / seconds,
                        mfu=flops_per_step / seconds / peak_flops,
                    )
                if evaluates or done == train_cfg.steps:
                    record.update(
                        _evaluate(
                            eval_step, state, config, mesh, eval_source, train_cfg.eval_batches
                        )
                    )
                if done == train_cfg.steps and train_cfg.train_eval_batches:
                    # The first training batches in the training order: examples it has fitted.
                    train_source = data.make_source(
                        config.data,
                        split="train",
                        batch_size=batch_size,
                        rows=rows,
                        seed=config.seed,
                    )
                    record.update(
                        _evaluate(
                            eval_step,
                            state,
                            config,
                            mesh,
                            train_source,
                            train_cfg.train_eval_batches,
                            prefix="train_eval",
                        )
                    )
                if record:
                    writer.write(done, record)
                if saves:
                    checkpointer.save(done, state, source.get_state())
                    last_saved = done
            for callback in callbacks:
                callback(done, state)
    finally:
        guard.__exit__(None, None, None)
        checkpointer.close()
        writer.close()

    summary = _summary(workdir, config, run.params, writer, train_step, peak_flops, mesh)
    summary["resumed_from_step"] = start
    summary["params_sha256"] = _fingerprint(nnx.state(run.merge(state), nnx.Param))
    write_json(workdir / "summary.json", summary)
    return summary


def _summary(workdir, config, params, writer, train_step, peak_flops, mesh) -> dict:
    records = []
    if (workdir / "metrics.jsonl").exists():
        records = [
            json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()
        ]
    evals = [r for r in records if "eval_accuracy" in r]
    memory, memory_source = peak_memory_bytes()
    return {
        "final_step": config.train.steps,
        "final_train_loss": next((r["loss"] for r in reversed(records) if "loss" in r), None),
        "final_eval_accuracy": evals[-1]["eval_accuracy"] if evals else None,
        "final_eval_loss": next(
            (r["eval_loss"] for r in reversed(records) if "eval_loss" in r), None
        ),
        "best_eval_accuracy": max((r["eval_accuracy"] for r in evals), default=None),
        "final_train_eval_accuracy": next(
            (r["train_eval_accuracy"] for r in reversed(records) if "train_eval_accuracy" in r),
            None,
        ),
        "params_total": params["total"],
        "params_trainable": params["trainable"],
        "params_lora": params["lora"],
        "optimizer_state_bytes": params["optimizer_state_bytes"],
        "median_step_time_s": writer.median_step_time(),
        "peak_memory_bytes": memory,
        "peak_memory_source": memory_source,
        "peak_flops": peak_flops,
        "step_traces": train_step.traces,
        "device": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        "mesh": dict(mesh.shape),
    }
