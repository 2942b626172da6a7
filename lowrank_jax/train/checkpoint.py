"""Orbax checkpoints of the training state and the data iterator, with auto-resume.

A checkpoint holds the whole NNX state of (model, optimizer) — parameters,
optimizer moments, rng counters, Performer features — and the data iterator's
state as JSON, so a resumed run continues bit for bit. Saves are asynchronous
(orbax); a checkpoint is only visible once complete (orbax writes to a
temporary directory and renames it). If the newest one still fails to restore
(corrupt files), the previous one is used, with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


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
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, **ranking)
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

    def restore_latest(self, like) -> tuple[int, object, dict] | None:
        """(step, state, data_state) of the newest checkpoint that restores, or None.

        ``like`` is the current state (sharded arrays); the restored one has its
        structure and shardings.
        """
        abstract = _abstract_storable(like)
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()
                    ),
                )
            except Exception as error:  # a corrupt checkpoint: any orbax/tensorstore error
                log.warning(
                    "checkpoint at step %d does not restore (%s); trying an older one", step, error
                )
                continue
            return step, _from_storable(restored.state, like), dict(restored.data)
        return None

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
