"""The model of a config: encoder, pretrained weights, then LoRA / adapters (surgery).

    model(config.model, rngs=)     encoder -> pretrained weights -> LoRA / adapters
    run_rngs(seed)                 a run's random streams

Models only: the training state (the optimizer, the placed state and its steps,
``load_model``, the whole config's validation) is ``lowrank_jax.train.state``,
which builds through ``model``. ``build`` imports nothing from ``train``.
"""

from __future__ import annotations

from flax import nnx

from lowrank_jax import SHIMS, moved, surgery
from lowrank_jax.config import within
from lowrank_jax.models import build_encoder, pretrained, resolve_config


def __getattr__(name: str):
    """The names that moved to ``train.state`` stay here for one release (``SHIMS``)."""
    if f"{__name__}.{name}" in dict(SHIMS):
        return moved(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_rngs(seed: int) -> nnx.Rngs:
    """A run's random streams: parameters, dropout and Performer features from ``seed``."""
    return nnx.Rngs(params=seed, dropout=seed + 1, features=seed + 2)


def model(model_config, *, rngs: nnx.Rngs, with_surgery: bool = True) -> nnx.Module:
    """The encoder of ``config.model``, its pretrained weights, then LoRA / adapters.

    ``with_surgery=False`` stops before LoRA and adapters: the model as it was before
    surgery (a distillation teacher ``self``).

    Example:
      >>> import jax.numpy as jnp
      >>> from lowrank_jax.models import default_config
      >>> cfg = default_config()
      >>> cfg.attention.kind, cfg.lora.rank = "performer", 8
      >>> m = model(cfg, rngs=nnx.Rngs(0))
      >>> type(m.layers[0].attention.query).__name__, m(jnp.ones((2, 16), int)).shape
      ('LoRA', (2, 2))
    """
    cfg = resolve_config(model_config)
    encoder = build_encoder(cfg, rngs=rngs)
    if cfg.pretrained:
        pretrained.load_checkpoint(encoder, cfg.pretrained)
    if not with_surgery:
        return encoder
    if cfg.lora.rank or cfg.lora.rules:
        lora = cfg.lora
        with within("model.lora"):
            surgery.apply_lora(
                encoder,
                lora.targets if lora.rank else None,
                lora.rank or None,
                rules=[tuple(rule) for rule in lora.rules],
                alpha=lora.alpha,
                dropout=lora.dropout,
                rslora=lora.rslora,
                variant=lora.variant,
                init=lora.init,
                rngs=rngs,
            )
    if cfg.adapters.bottleneck:
        adapters = cfg.adapters
        with within("model.adapters"):
            surgery.add_adapters(encoder, adapters.targets, adapters.bottleneck, rngs=rngs)
    return encoder
