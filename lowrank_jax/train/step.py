"""The optimizer and the one jitted training step.

The step works on the NNX state of the pair (model, optimizer): it merges them,
takes gradients of the configured loss (``losses.LOSSES``) with respect to the
trainable parameters only (``surgery.trainable_filter``), updates them with
AdamW and returns the new state. It is one ``jax.jit`` with in/out shardings
and a donated state, traced once for the whole run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lowrank_jax.config import check_choice, check_int, check_number, fail
from lowrank_jax.layers.factorized import frobenius_penalty
from lowrank_jax.train import losses

SCHEDULES = ("cosine", "rsqrt", "constant")


def make_schedule(train_config) -> optax.Schedule:
    """Linear warm-up to ``learning_rate``, then cosine (to 0 at ``steps``), rsqrt or constant."""
    peak, warmup, steps = train_config.learning_rate, train_config.warmup_steps, train_config.steps
    warm = optax.linear_schedule(0.0, peak, max(warmup, 1))
    if train_config.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, max(steps - warmup, 1))
    elif train_config.schedule == "rsqrt":

        def decay(count):
            return peak * jax.lax.rsqrt((count + max(warmup, 1)) / max(warmup, 1))
    else:
        decay = optax.constant_schedule(peak)
    return optax.join_schedules([warm, decay], [warmup])


def make_optimizer(
    train_config, no_decay: frozenset[tuple] = frozenset()
) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW with weight decay on matrices only.

    ``no_decay``: parameter paths AdamW does not decay although they are matrices
    (the factors of a Frobenius-decayed layer: ``layers.factorized.frobenius_paths``).
    """

    def decay_mask(params):
        def decayed(path, p):
            return p.ndim >= 2 and _keys(path) not in no_decay

        return jax.tree_util.tree_map_with_path(decayed, params)

    adamw = optax.adamw(
        make_schedule(train_config),
        b1=train_config.b1,
        b2=train_config.b2,
        weight_decay=train_config.weight_decay,
        mask=decay_mask,
    )
    if train_config.grad_clip:
        return optax.chain(optax.clip_by_global_norm(train_config.grad_clip), adamw)
    return adamw


def profile_range(train_config) -> tuple[int, int] | None:
    """``train.profile_steps`` as (first, last) optimizer steps, or None when off."""
    text = train_config.get("profile_steps", "")
    if text == "":
        return None
    first, _, last = str(text).partition("-")
    try:
        first, last = int(first), int(last or first)
    except ValueError:
        first, last = 0, 0
    if not 1 <= first <= last <= train_config.steps:
        allowed = f"'' or 'FIRST-LAST' with 1 <= FIRST <= LAST <= steps = {train_config.steps}"
        fail("train.profile_steps", allowed, text)
    return first, last


def _keys(path) -> tuple:
    """A parameter's path as the module keys (a Variable's ``.value`` left out)."""
    return tuple(
        getattr(k, "key", getattr(k, "idx", None))
        for k in path
        if not isinstance(k, jax.tree_util.GetAttrKey)
    )


def validate(train_config) -> None:
    """Check ``config.train``; errors name the field."""
    for field in (
        "steps",
        "batch_size",
        "log_every",
        "checkpoint_every",
        "keep_checkpoints",
    ):
        check_int(train_config[field], f"train.{field}")
    for field in ("warmup_steps", "eval_every", "eval_batches", "train_eval_batches"):
        check_int(train_config[field], f"train.{field}", low=0)
    check_choice(train_config.schedule, "train.schedule", SCHEDULES)
    profile_range(train_config)
    for field in ("learning_rate", "weight_decay", "grad_clip", "peak_flops"):
        check_number(train_config[field], f"train.{field}")
    losses.check(train_config)


def optimizer_state_bytes(optimizer: nnx.Optimizer) -> int:
    """Bytes of the optimizer's state (Adam's moments of the trainable parameters, counts)."""
    leaves = jax.tree.leaves(nnx.state(optimizer.opt_state))
    return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in leaves)


class TrainStep:
    """``step(state, batch) -> (state, metrics)``, jitted with shardings; counts its traces.

    ``loss(model, batch, teacher)`` is one of ``losses.LOSSES``; ``teacher`` is
    ``(graphdef, state, sharding)`` of a frozen model, passed to every call (never
    trained, never checkpointed), or None. Metrics: loss, grad_norm, the loss's own
    (accuracy, cosine), and learning_rate when ``schedule`` is given. The gradient
    is the loss's plus, where factorized layers have Frobenius decay, that of
    their penalty (logged as ``frobenius_penalty``; ``loss`` stays the loss alone).
    """

    def __init__(
        self,
        graphdef,
        wrt,
        state_sharding,
        batch_sharding,
        metrics_sharding,
        *,
        loss: losses.Loss,
        schedule=None,
        teacher=None,
    ):
        self.traces = 0
        teacher_graphdef, self.teacher_state, teacher_sharding = teacher or (None, None, None)

        def step(state, batch, teacher_state):
            self.traces += 1
            model, optimizer = nnx.merge(graphdef, state)
            frozen = _merge(teacher_graphdef, teacher_state)
            # this step's learning rate, on the device: the host never evaluates the schedule
            rate = {} if schedule is None else {"learning_rate": schedule(optimizer.step[...])}

            def objective(model):
                per_example, metrics = loss(model, batch, frozen)
                value = per_example.mean()
                metrics = {"loss": value, **{key: x.mean() for key, x in metrics.items()}}
                penalty = frobenius_penalty(model)  # None: no layer has Frobenius decay
                if penalty is None:
                    return value, metrics
                return value + penalty, {**metrics, "frobenius_penalty": penalty}

            (_, metrics), grads = nnx.value_and_grad(
                objective, argnums=nnx.DiffState(0, wrt), has_aux=True
            )(model)
            optimizer.update(model, grads)
            metrics = {**metrics, "grad_norm": optax.tree.norm(grads), **rate}
            return nnx.state((model, optimizer)), metrics

        self._step = jax.jit(
            step,
            in_shardings=(state_sharding, batch_sharding, teacher_sharding),
            out_shardings=(state_sharding, metrics_sharding),
            donate_argnums=0,
        )

    def __call__(self, state, batch):
        return self._step(state, batch, self.teacher_state)

    def lower(self, state, batch):
        """The jitted step lowered for these arguments (``.compile().memory_analysis()``...)."""
        return self._step.lower(state, batch, self.teacher_state)


def _merge(graphdef, state):
    return None if graphdef is None else nnx.merge(graphdef, state)


def make_eval_step(
    graphdef, state_sharding, batch_sharding, metrics_sharding, *, loss: losses.Loss, teacher=None
):
    """``eval(state, batch) -> {"loss", ...the loss's metrics, "count"}``: sums over the batch.

    Each example counts with its ``batch["weight"]`` (1 real, 0 padding; all 1 if absent), so
    sums over batches divided by the summed ``count`` are means over the examples.
    The model is in eval mode.
    """
    teacher_graphdef, teacher_state, teacher_sharding = teacher or (None, None, None)

    def evaluate(state, batch, teacher_state):
        model, _ = nnx.merge(graphdef, state)
        value, metrics = loss(model, batch, _merge(teacher_graphdef, teacher_state))
        weight = batch["weight"] if "weight" in batch else jnp.ones(batch["label"].shape)
        sums = {key: jnp.sum(weight * x) for key, x in {"loss": value, **metrics}.items()}
        return {**sums, "count": jnp.sum(weight)}

    jitted = jax.jit(
        evaluate,
        in_shardings=(state_sharding, batch_sharding, teacher_sharding),
        out_shardings=metrics_sharding,
    )
    return lambda state, batch: jitted(state, batch, teacher_state)
