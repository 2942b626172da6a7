"""Which parameters train: a filter from a spec string, and parameter counts.

``surgery`` re-exports both (``surgery.trainable_filter``, ``surgery.count_params``).
"""

from __future__ import annotations

import re

import jax
import numpy as np
from flax import nnx

from lowrank_jax.config import fail
from lowrank_jax.layers import AdapterParam
from lowrank_jax.paths import dotted


def trainable_filter(model: nnx.Module, spec: str = "auto") -> nnx.filterlib.Filter:
    """An NNX filter for the parameters that train, from a spec string.

    - ``"all"``: every ``nnx.Param``;
    - ``"lora"``: ``nnx.LoRAParam`` only; ``"adapters"``: ``AdapterParam`` only;
    - ``"auto"``: the LoRA and adapter parameters if the model has any (the base
      is frozen after surgery, as with peft), else every parameter;
    - anything else: a regex that must match a parameter's whole dotted path,
      e.g. ``r".*lora_[ab]|head\\..*"`` for LoRA plus a classification head.
    """
    if spec == "all":
        return nnx.Param
    if spec == "lora":
        return nnx.LoRAParam
    if spec == "adapters":
        return AdapterParam
    if spec == "auto":
        efficient = nnx.Any(nnx.LoRAParam, AdapterParam)
        return efficient if _count(model, efficient) else nnx.Param
    try:
        pattern = re.compile(spec)
    except re.error as e:
        fail("trainable", f"all, lora, adapters, auto or a regex (not a valid regex: {e})", spec)
    return nnx.All(nnx.Param, lambda path, _: bool(pattern.fullmatch(dotted(path))))


def _count(model: nnx.Module, filter_: nnx.filterlib.Filter) -> int:
    state = nnx.state(model, filter_)
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state)))


def count_params(model: nnx.Module, trainable: str = "auto") -> dict[str, int]:
    """Parameter counts: ``{"total", "trainable", "lora"}``.

    ``total`` counts every ``nnx.Param`` (LoRA and adapter parameters included),
    ``trainable`` those selected by ``trainable_filter(model, trainable)``,
    ``lora`` the ``nnx.LoRAParam`` ones.
    """
    return {
        "total": _count(model, nnx.Param),
        "trainable": _count(model, trainable_filter(model, trainable)),
        "lora": _count(model, nnx.LoRAParam),
    }
