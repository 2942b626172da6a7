"""Orbax checkpoints of the training state and the data iterator, with auto-resume.

A checkpoint holds the whole NNX state of (model, optimizer) — parameters,
optimizer moments, rng counters, Performer features — and the data iterator's
state as JSON, so a resumed run continues bit for bit. Saves are asynchronous
(orbax); a checkpoint is only visible once complete (orbax writes to a
temporary directory and renames it).

Checkpoints heal: one that still fails to restore (damaged files) is moved
aside to ``<dir>/corrupt/<step>-<time>`` (never deleted: it may be evidence)
with a one-line warning, and the previous one is used; the resumed run then
writes that step again. A failed read in orbax echoes as hundreds of lines
(its other reads fail too, as asyncio tasks and coroutines collected later);
``quiet_orbax`` keeps those echoes off the terminal, since the failure itself
comes back to us as one exception.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

CORRUPT = "corrupt"
# where the echoes of orbax's failed reads and writes come from (see ``quiet_orbax``)
_ECHO_SOURCES = ("orbax", "tensorstore", "asyncio")


class CheckpointError(RuntimeError):
    """A run's checkpoints do not hold what its summary describes (``train.state.load_model``)."""


def say(message: str) -> None:
    """One line on stderr, from process 0 only."""
    if jax.process_index() == 0:
        print(message, file=sys.stderr, flush=True)


def reason(error: BaseException) -> str:
    """The root cause of ``error`` in one short line (TensorStore's spec dumps dropped)."""
    while True:
        deeper = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        if deeper is None:
            break
        error = deeper
    text = (str(error).strip().splitlines() or [""])[0].split(" See full TensorStore")[0]
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= 240 else text[:237] + "..."


@contextlib.contextmanager
def quiet_orbax():
    """Keep the echoes of orbax's background failures off stderr while inside.

    A failed restore or save reaches the caller as one exception; its echoes are
    the same failure again, from orbax's other reads and writes: un-awaited
    coroutines collected later (``sys.unraisablehook``), thread exceptions, asyncio's
    "Task exception was never retrieved" and orbax's own error log. Those whose
    traceback or log record comes from orbax, TensorStore or asyncio (or that say
    asyncio's loop is closed) are dropped; anything else is passed on. The garbage
    is collected before leaving, so nothing echoes afterwards.
    """
    restore = _drop_echoes()
    try:
        yield
    finally:
        gc.collect()
        restore()


def drop_orbax_echoes() -> None:
    """``quiet_orbax`` until the process ends (the CLI: its last futures die at exit)."""
    _drop_echoes()
    warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)


def _drop_echoes() -> Callable[[], None]:
    """Install the filters of ``quiet_orbax``; returns the function that removes them."""
    unraisable, excepthook, printed = sys.unraisablehook, threading.excepthook, sys.excepthook
    loggers = [logging.getLogger(name) for name in ("asyncio", "absl")]

    def on_unraisable(info) -> None:
        if not _echo(info.exc_value, info.exc_traceback):
            unraisable(info)

    def on_thread_error(info) -> None:
        if not _echo(info.exc_value, info.exc_traceback):
            excepthook(info)

    def on_printed(kind, value, tb) -> None:
        if not _echo(value, tb):
            printed(kind, value, tb)

    def on_record(record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        tb = record.exc_info[2] if record.exc_info else None
        from_echo = any(name in record.pathname for name in _ECHO_SOURCES)
        return not from_echo and not (error is not None and _echo(error, tb))

    sys.unraisablehook, threading.excepthook = on_unraisable, on_thread_error
    sys.excepthook = on_printed
    for logger in loggers:
        logger.addFilter(on_record)

    def restore() -> None:
        sys.unraisablehook, threading.excepthook = unraisable, excepthook
        sys.excepthook = printed
        for logger in loggers:
            logger.removeFilter(on_record)

    return restore


@contextlib.contextmanager
def held_stderr():
    """Hold what is written to file descriptor 2 inside; ``held.drop()`` discards it.

    TensorStore's own threads print the "Event loop is closed" echoes of a failed
    read straight to the descriptor, past every Python hook. What was held is
    written out on leaving unless dropped, so nothing else is lost.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        held = _Held()
        try:
            yield held
        finally:
            if held.dropped:  # let the reads still failing in TensorStore's threads print here
                time.sleep(0.05)
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not held.dropped:
                sink.seek(0)
                os.write(2, sink.read())


class _Held:
    dropped = False

    def drop(self) -> None:
        self.dropped = True


def _echo(error, tb) -> bool:
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return True
    while tb is not None:
        if any(name in tb.tb_frame.f_code.co_filename for name in _ECHO_SOURCES):
            return True
        tb = tb.tb_next
    return False


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_storable(tree):
    """Typed PRNG keys -> their uint32 data (orbax stores plain arrays)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _abstract_storable(tree):
    def one(x):
        if _is_key(x):
            data = jax.eval_shape(jax.random.key_data, x)
            return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=x.sharding)
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)

    return jax.tree.map(one, tree)


def _from_storable(stored, like):
    return jax.tree.map(
        lambda s, x: jax.random.wrap_key_data(s, impl=jax.random.key_impl(x)) if _is_key(x) else s,
        stored,
        like,
    )


class Checkpointer:
    """Save every K steps (and at the end), keep the newest N, restore the newest good one.

    With ``best`` (``"max"`` or ``"min"``) it keeps instead the ``keep`` checkpoints
    whose ``metrics["value"]`` is best (orbax's best-metric retention): the
    trainer's best-on-validation checkpoint, next to the newest ones for resume.
    """

    def __init__(self, directory: str | Path, *, keep: int, best: str | None = None):
        ranking = {}
        if best is not None:
            ranking = {
                "best_fn": lambda metrics: metrics["value"],
                "best_mode": best,
                "keep_checkpoints_without_metrics": False,
            }
        # Orbax's saves meet at barriers (JAX's coordination service) named by this prefix;
        # two managers saving the same step (the trainer's final and best) share names
        # without it, and their barriers cross over between processes and deadlock.
        barriers = ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=Path(directory).name)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, multiprocessing_options=barriers, **ranking
        )
        with quiet_orbax():  # it logs the damaged step metadata that restore_latest reports
            self.manager = ocp.CheckpointManager(
                Path(directory).absolute(), options=options, item_names=("state", "data")
            )

    def save(self, step: int, state, data_state: dict, value: float | None = None) -> None:
        """Save ``state`` at ``step``; ``value`` is the metric a best-keeping one ranks by."""
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_to_storable(state)),
                data=ocp.args.JsonSave(data_state),
            ),
            metrics=None if value is None else {"value": float(value)},
        )

    def best(self) -> tuple[int, float] | None:
        """(step, value) of the best checkpoint kept, or None (after any save in flight)."""
        self.manager.wait_until_finished()  # metrics are readable once a save has finished
        step = self.manager.best_step()
        if step is None:
            return None
        return step, float(self.manager.metrics(step)["value"])

    def restore_latest(self, like, *, heal: bool = True) -> tuple[int, object, dict] | None:
        """(step, state, data_state) of the newest checkpoint that restores, or None.

        ``like`` is the current state (sharded arrays); the restored one has its
        structure and shardings. A checkpoint that does not restore is reported in
        one line and, with ``heal``, moved aside to ``corrupt/`` so that the step can
        be saved again (orbax saves only steps newer than its newest); without
        ``heal`` (a reader such as ``load_model``) nothing on disk changes.
        """
        abstract = _abstract_storable(like)
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()
        )
        for step in sorted(self.manager.all_steps(), reverse=True):
            failure = None
            with held_stderr() as held, quiet_orbax():
                try:
                    restored = self.manager.restore(step, args=args)
                except Exception as error:  # damaged files: any orbax / TensorStore / JSON error
                    failure = reason(error)
                    held.drop()
            if failure is None:
                return step, _from_storable(restored.state, like), dict(restored.data)
            where = self.directory / str(step)
            then = f"moved to {self._set_aside(step)}" if heal else "trying an older one"
            say(f"warning: checkpoint {where} does not restore ({failure}); {then}")
        return None

    @property
    def directory(self) -> Path:
        return Path(self.manager.directory)

    def _set_aside(self, step: int) -> Path:
        """Move checkpoint ``step`` to ``corrupt/<step>-<time>`` (process 0) and forget it."""
        aside = self.directory / CORRUPT / f"{step}-{time.strftime('%Y%m%dT%H%M%S')}"
        if jax.process_index() == 0:
            aside.parent.mkdir(exist_ok=True)
            (self.directory / str(step)).rename(aside)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        self.manager.reload()
        return aside

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
