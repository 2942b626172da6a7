"""The training losses, by name (``config.train.loss``).

A loss is ``loss(model, batch, teacher) -> (per_example [B], metrics)``: ``batch``
holds ``tokens`` [B, N], ``mask`` [B, N] and ``label`` [B]; ``teacher`` is the
frozen teacher model (distillation) or None; ``metrics`` are the loss's own
figures per example (accuracy, cosine), logged beside the loss. Training takes
means; evaluation sums them weighted by ``batch["weight"]``, so a split is
scored over exactly its examples. ``SELECTION`` names the validation metric a
run keeps its best checkpoint by.

- ``classification``: softmax cross-entropy of the logits against the labels.
- ``distillation``: match a frozen teacher's pooled output [B, D] (the
  sentence vector ``model.pool``), by ``cosine`` (1 − cosine between the two,
  each L2-normalised, as a sentence embedding is used) or ``mse``. The labels
  are not used. The teacher is ``self`` (this config's model before surgery:
  its encoder and pretrained weights, without LoRA / adapters, as built by
  ``build.model(..., surgery=False)``) or a run directory (its best checkpoint).
  A batch may carry the teacher's pooled output itself as ``target`` [B, D],
  computed once beforehand for sentences seen every epoch: the step then never
  runs the teacher (XLA drops its unused forward).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lowrank_jax.config import check_choice, fail, require

Metrics = dict[str, jax.Array]
Loss = Callable[[nnx.Module, dict, nnx.Module | None], tuple[jax.Array, Metrics]]
METRICS = ("cosine", "mse")


def loss_and_accuracy(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Softmax cross-entropy and correctness (1.0 / 0.0) per example, [B] each."""
    loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    return loss, (logits.argmax(-1) == labels).astype(jnp.float32)


def classification(train_config) -> Loss:
    """Cross-entropy of ``model(tokens, mask)`` against ``label``; metric: accuracy."""
    del train_config

    def loss(model, batch, teacher):
        del teacher
        value, accuracy = loss_and_accuracy(model(batch["tokens"], batch["mask"]), batch["label"])
        return value, {"accuracy": accuracy}

    return loss


def _unit(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def distillation(train_config) -> Loss:
    """Pooled output [B, D] against the frozen teacher's; metric: mean cosine.

    Example:
      >>> import ml_collections, jax.numpy as jnp
      >>> from flax import nnx
      >>> from lowrank_jax.models import build_encoder, default_config
      >>> train = ml_collections.ConfigDict({"distillation": {"metric": "cosine"}})
      >>> model = build_encoder(default_config(), rngs=nnx.Rngs(0))
      >>> batch = {"tokens": jnp.ones((2, 8), int), "mask": jnp.ones((2, 8), bool)}
      >>> model.eval()
      >>> value, metrics = distillation(train)(model, batch, model)
      >>> abs(round(float(value.mean()), 5)), round(float(metrics["cosine"].mean()), 5)
      (0.0, 1.0)
    """
    metric = train_config.distillation.metric

    def loss(model, batch, teacher):
        student = model.pool(batch["tokens"], batch["mask"])
        if "target" in batch:  # precomputed: the teacher's forward is never built
            target = jax.lax.stop_gradient(batch["target"])
        else:
            target = jax.lax.stop_gradient(teacher.pool(batch["tokens"], batch["mask"]))
        cosine = jnp.sum(_unit(student) * _unit(target), axis=-1)  # [B]
        if metric == "cosine":
            return 1.0 - cosine, {"cosine": cosine}
        error = student.astype(jnp.float32) - target.astype(jnp.float32)
        return jnp.mean(error**2, axis=-1), {"cosine": cosine}

    return loss


LOSSES: dict[str, Callable[..., Loss]] = {
    "classification": classification,
    "distillation": distillation,
}
# The validation metric that selects a run's best checkpoint, and whether higher is better.
SELECTION = {"classification": ("accuracy", "max"), "distillation": ("loss", "min")}


def make_loss(train_config) -> Loss:
    """The loss ``config.train.loss`` names, configured by ``config.train``."""
    return LOSSES[train_config.loss](train_config)


def needs_teacher(train_config) -> bool:
    return train_config.loss == "distillation"


def check(train_config) -> None:
    """Check ``train.loss`` and its group (``train.distillation``)."""
    check_choice(train_config.loss, "train.loss", sorted(LOSSES))
    if needs_teacher(train_config):
        require(train_config, ("distillation",), "train")
        group = train_config.distillation
        require(group, ("metric", "teacher"), "train.distillation")
        check_choice(group.metric, "train.distillation.metric", METRICS)
        teacher = group.teacher
        if not isinstance(teacher, str) or not (
            teacher == "self" or (Path(teacher) / "config.json").is_file()
        ):
            fail("train.distillation.teacher", "'self' or a run directory", teacher)
