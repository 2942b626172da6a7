"""The one trainer: ``train_and_evaluate(config, workdir)``.

config -> validation (every field, before any compute) -> ``train_state``
(model and optimizer state placed by logical-axis rules, the jitted steps) ->
resume from the newest good checkpoint -> jitted steps over this process's rows
of each global batch -> metrics.jsonl / TensorBoard / progress bar, validation
evaluations (the best kept in ``best/``), checkpoints -> the best and the final
state scored on the whole test split -> summary.json. The same code runs on 1
CPU, a GPU/TPU mesh, or several hosts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from lowrank_jax import data
from lowrank_jax.config import ConfigError
from lowrank_jax.train import evaluate, losses, rundir, sharding
from lowrank_jax.train import step as step_lib
from lowrank_jax.train.checkpoint import Checkpointer, quiet_orbax, say
from lowrank_jax.train.lock import RunLock
from lowrank_jax.train.metrics import (
    MetricsWriter,
    matmul_peak_flops,
    peak_memory_bytes,
    read_json,
    read_jsonl,
    write_json,
)
from lowrank_jax.train.rundir import DiskFullError
from lowrank_jax.train.state import load_model, params_sha256, train_state, validate

__all__ = ["DiskFullError", "NonFiniteLossError", "load_model", "train_and_evaluate", "validate"]

# For subprocess tests: SIGKILL this process right after finishing step N (a callback
# registered at start, see ``callbacks_from_env``).
KILL_AT_STEP = "LOWRANK_JAX_KILL_AT_STEP"
STEP_DELAY = "LOWRANK_JAX_STEP_DELAY"
# jax.transfer_guard level for the training loop (allow | log | disallow): "disallow"
# makes any implicit host<->device transfer in the loop an error (benchmarks/recompile.py).
TRANSFER_GUARD = "LOWRANK_JAX_TRANSFER_GUARD"
# ``callback(step, state)`` after every step (``step`` counts finished steps); the
# state may still be computing (block on it if you need its values).
Callback = Callable[[int, nnx.State], None]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before saving that state."""


def callbacks_from_env() -> list[Callback]:
    """Test hooks the subprocess tests switch on by environment: ``KILL_AT_STEP`` (SIGKILL
    after that step) and ``STEP_DELAY`` (seconds of sleep after each step, so that a
    test can cancel a run in its middle)."""
    kill_at = int(os.environ.get(KILL_AT_STEP, "-1"))
    delay = float(os.environ.get(STEP_DELAY, "0"))
    hooks = []
    if delay > 0:
        hooks.append(lambda done, state: time.sleep(delay))
    if kill_at < 0:
        return hooks

    def kill(done: int, state) -> None:
        if done == kill_at:
            jax.block_until_ready(state)
            os.kill(os.getpid(), signal.SIGKILL)

    return [*hooks, kill]


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    force: bool = False,
    callbacks: Sequence[Callback] = (),
) -> dict:
    """Train ``config`` in ``workdir`` (resuming if it holds this run) and return the summary.

    Model selection is on validation: every evaluation that improves the loss's
    selection metric (``losses.SELECTION``: validation accuracy, or loss) saves the
    state to ``best/``; at the end that state, and the final one, are scored on the
    whole test split once. ``callbacks``: ``callback(step, state)`` after every step.
    One writer per run: process 0 holds ``RunLock(workdir)`` for the run's life, so a
    second ``train`` on the same workdir stops with one line naming the holder.
    """
    validate(config)
    workdir = Path(workdir)
    config_dict = json.loads(config.to_json_best_effort(sort_keys=True))
    rundir.check(workdir, config_dict, force=False, dry=force)  # refuse before writing
    data.prepare(config.data)  # a damaged data cache is rebuilt, or one line, before the workdir
    with RunLock(workdir, "run") if jax.process_index() == 0 else contextlib.nullcontext():
        rundir.check(workdir, config_dict, force)
        sizes: dict[str, int] = {}  # the state's bytes, once built: what a checkpoint needs
        try:
            # orbax's background failures come back to us as exceptions: their echoes are dropped
            with quiet_orbax():
                return _train(config, workdir, config_dict, callbacks, sizes)
        except Exception as error:
            if not rundir.no_space(error):
                raise
            message = rundir.disk_full_message(workdir, sizes.get("state_bytes"))
            raise DiskFullError(errno.ENOSPC, message) from None


def _train(config, workdir: Path, config_dict: dict, callbacks, sizes: dict) -> dict:
    """The run itself, once this process holds the workdir (``train_and_evaluate``)."""
    callbacks = [*callbacks, *callbacks_from_env()]
    train_cfg, batch_size = config.train, config.train.batch_size
    mesh = sharding.make_mesh(config.mesh)
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / "config.json", config_dict)

    run = train_state(config, mesh)
    state, train_step, eval_step = run.state, run.train_step, run.eval_step
    sizes["state_bytes"] = sum(x.nbytes for x in jax.tree.leaves(state))
    flops_per_token = 6 * run.macs_per_token  # forward + backward
    metric, mode = losses.SELECTION[train_cfg.loss]

    rows = sharding.local_rows(mesh, batch_size)
    source, val_source = (
        data.make_source(
            config.data, split=split, batch_size=batch_size, rows=rows, seed=config.seed
        )
        for split in ("train", "validation")
    )
    checkpointer = Checkpointer(workdir / "checkpoints", keep=train_cfg.keep_checkpoints)
    best = Checkpointer(workdir / "best", keep=1, best=mode)
    start = 0
    # (step, value) of the best validation so far: read once, then kept here, the same on
    # every process (orbax writes checkpoint metrics from the primary process)
    selected = best.best()
    restored = checkpointer.restore_latest(state)
    if restored is not None:
        start, state, data_state = restored
        source.set_state(data_state)
        summary_path = workdir / "summary.json"
        if start == train_cfg.steps and summary_path.exists():  # finished: nothing to redo
            try:
                summary = read_json(summary_path)
            except ConfigError as error:  # written again below, from the files on disk
                say(f"warning: {error}; writing it again")
            else:
                checkpointer.close()
                best.close()
                return summary
        say(f"resuming {workdir} from step {start}")

    peak_flops = train_cfg.peak_flops or matmul_peak_flops()
    writer = MetricsWriter(workdir, total_steps=train_cfg.steps, start_step=start)
    last_saved = start if restored is not None else None
    guard = jax.transfer_guard(os.environ.get(TRANSFER_GUARD, "allow"))
    tracing, waited, loop_began, done = False, 0.0, time.perf_counter(), start
    window_tokens, token_slots, real_tokens = 0, 0, 0  # padded lengths vary with data.buckets
    try:
        guard.__enter__()
        # Steps are dispatched without waiting; the host syncs (one explicit transfer of
        # the step's scalars) only where it needs them: the first step (its compilation
        # timed apart), and steps that log, evaluate, checkpoint or end the run.
        window_start, window_began = start, time.perf_counter()
        profile = step_lib.profile_range(train_cfg)
        for index in range(start, train_cfg.steps):
            done = index + 1
            if profile and done == profile[0]:
                jax.profiler.start_trace(str(workdir / "profile"), create_perfetto_trace=True)
                tracing = True
            fetch = time.perf_counter()
            host = next(source)
            batch = sharding.place_batch(host, mesh, batch_size)
            if index > start:  # the host's wait for this step's batch
                waited += time.perf_counter() - fetch
            window_tokens += batch_size * host["tokens"].shape[1]
            token_slots += host["mask"].size
            real_tokens += int(host["mask"].sum())
            state, metrics = train_step(state, batch)
            if tracing and done == profile[1]:
                jax.block_until_ready(state)
                jax.profiler.stop_trace()
                tracing = False
            logs = done % train_cfg.log_every == 0 or done == train_cfg.steps
            evaluates = done == train_cfg.steps or (
                bool(train_cfg.eval_every) and done % train_cfg.eval_every == 0
            )
            saves = done % train_cfg.checkpoint_every == 0 or done == train_cfg.steps
            writer.advance()
            if index == start or logs or evaluates or saves:
                metrics = jax.device_get(metrics)  # waits for the step
                now = time.perf_counter()
                seconds = (now - window_began) / (done - window_start)
                tokens_per_s = window_tokens / (now - window_began)
                if index > start:  # the first step's window holds its compilation
                    writer.step_time(seconds)
                else:
                    loop_began = now
                window_start, window_began, window_tokens = done, now, 0
                loss = float(metrics["loss"])
                if not math.isfinite(loss):
                    raise NonFiniteLossError(
                        f"non-finite loss ({loss}) by step {done}; stopped without saving it "
                        f"(last checkpoint: {last_saved if last_saved is not None else 'none'})"
                    )
                record = {}
                if logs:
                    record = {key: float(value) for key, value in metrics.items()}
                    record.update(
                        step_time_s=seconds,
                        tokens_per_s=tokens_per_s,
                        mfu=flops_per_token * tokens_per_s / peak_flops,
                    )
                if evaluates:
                    scores = evaluate.validation(eval_step, state, config, mesh, val_source)
                    record.update(scores)
                    if _improves(scores[f"val_{metric}"], selected, mode, done):
                        best.save(done, state, source.get_state(), scores[f"val_{metric}"])
                        selected = (done, scores[f"val_{metric}"])
                if record:
                    writer.write(done, record)
                if saves:
                    checkpointer.save(done, state, source.get_state())
                    last_saved = done
            for callback in callbacks:
                callback(done, state)
        loop_seconds = time.perf_counter() - loop_began if done > start + 1 else None
        best_state = state
        if selected is not None and selected[0] != train_cfg.steps:
            restored_best = best.restore_latest(state)
            if restored_best is None:  # unreadable: the final state is what there is
                say(f"warning: the best checkpoint of {workdir} does not restore; using the final")
                selected = None
            else:
                best_state = restored_best[1]
        scores = evaluate.whole_split(eval_step, best_state, config, mesh, "test", "test")
        scores |= evaluate.whole_split(eval_step, state, config, mesh, "test", "final_test")
        if train_cfg.train_eval_batches:  # the selected model's and the final one's
            scores |= evaluate.train_sample(eval_step, best_state, config, mesh)
            scores |= evaluate.train_sample(eval_step, state, config, mesh, "final_train")
    finally:
        if tracing:
            jax.profiler.stop_trace()
        with contextlib.ExitStack() as closing:  # every one closed, even if one fails (full disk)
            closing.callback(writer.close)
            closing.callback(best.close)
            closing.callback(checkpointer.close)
            closing.callback(guard.__exit__, None, None, None)

    records = _records(workdir)
    summary = _summary(records, config, run.params, writer, train_step, peak_flops, mesh)
    summary.update(_selection(records, selected, scores))
    summary["resumed_from_step"] = start
    # the share of the loop's time (after the first step) the host spent fetching batches
    summary["input_wait_fraction"] = waited / loop_seconds if loop_seconds else None
    # the share of the training batches' token slots that were padding (this process's rows)
    summary["padding_fraction"] = 1 - real_tokens / token_slots if token_slots else None
    summary["params_sha256"] = params_sha256(run.merge(state))
    summary["best_params_sha256"] = params_sha256(run.merge(best_state))
    write_json(workdir / "summary.json", summary)
    return summary


def _improves(value: float, best: tuple[int, float] | None, mode: str, step: int) -> bool:
    """A new best (ties keep the earlier one); a step already kept is never saved twice."""
    if best is None:
        return True
    if step <= best[0]:  # replayed after a resume: the kept checkpoint is this very state
        return False
    return value > best[1] if mode == "max" else value < best[1]


def _selection(records: list[dict], selected, scores: dict) -> dict:
    """The summary's model-selection keys: the best validation step and the test scores."""
    at_best = next((r for r in records if selected and r["step"] == selected[0]), {})
    return {
        "best_step": selected[0] if selected else None,
        "best_val_accuracy": at_best.get("val_accuracy"),
        "best_val_loss": at_best.get("val_loss"),
        "test_accuracy": scores.get("test_accuracy"),
        "test_loss": scores.get("test_loss"),
        "final_test_accuracy": scores.get("final_test_accuracy"),
        "final_test_loss": scores.get("final_test_loss"),
        "train_accuracy": scores.get("train_eval_accuracy"),
        "final_train_accuracy": scores.get("final_train_accuracy"),
        **({"test_cosine": scores["test_cosine"]} if "test_cosine" in scores else {}),
    }


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def _records(workdir: Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    return read_jsonl(path) if path.exists() else []


def _summary(records: list[dict], config, params, writer, train_step, peak_flops, mesh) -> dict:
    vals = [r for r in records if "val_loss" in r]
    memory, memory_source = peak_memory_bytes()
    return {
        "final_step": config.train.steps,
        "final_train_loss": next((r["loss"] for r in reversed(records) if "loss" in r), None),
        "final_val_accuracy": vals[-1].get("val_accuracy") if vals else None,
        "final_val_loss": vals[-1]["val_loss"] if vals else None,
        "params_total": params["total"],
        "params_trainable": params["trainable"],
        "params_lora": params["lora"],
        "optimizer_state_bytes": params["optimizer_state_bytes"],
        # a rerun that only finished the summary (killed before it) has no new step times:
        # the ones already in metrics.jsonl
        "median_step_time_s": writer.median_step_time()
        or _median([r["step_time_s"] for r in records if "step_time_s" in r]),
        "peak_memory_bytes": memory,
        "peak_memory_source": memory_source,
        "peak_flops": peak_flops,
        "step_traces": train_step.traces,
        "device": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        "mesh": dict(mesh.shape),
    }
