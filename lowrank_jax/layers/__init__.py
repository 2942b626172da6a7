"""Low-rank layers and the registry of dense kinds.

Every dense kind is a drop-in for a linear layer, ``(x) -> y`` on the last axis;
``make_dense`` builds one by name, so attention and FFN blocks never branch on
the kind and ``dense.kind="factorized", rank=R`` makes any projection low-rank.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from lowrank_jax.axes import KernelAxes
from lowrank_jax.config import check_choice, fail
from lowrank_jax.layers.adapter import Adapter, AdapterParam, WithAdapter
from lowrank_jax.layers.common import annotated, axes_metadata, check_rank, kernel_axes_of
from lowrank_jax.layers.factorized import FactorizedDense, check_init, rank_for_energy
from lowrank_jax.layers.flops import macs_per_token
from lowrank_jax.layers.lora import LoRA

__all__ = [
    "ACTIVATIONS",
    "DENSE",
    "FACTORIZED_OPTIONS",
    "Adapter",
    "AdapterParam",
    "FactorizedDense",
    "LoRA",
    "WithAdapter",
    "annotated",
    "check_dense",
    "check_rank",
    "kernel_axes_of",
    "macs_per_token",
    "make_dense",
    "rank_for_energy",
]


def _dense(
    in_features, out_features, *, rank, use_bias, kernel_axes, dtype, param_dtype, rngs, **options
):
    del rank, options  # a full dense layer has no rank; configs may set one for other kinds
    in_axis, out_axis = kernel_axes
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_metadata=axes_metadata((in_axis, out_axis)),
        bias_metadata=axes_metadata((out_axis,)),
        rngs=rngs,
    )


def _factorized(in_features, out_features, *, rank, **options):
    return FactorizedDense(in_features, out_features, rank, **options)


DENSE: dict[str, Callable[..., nnx.Module]] = {"dense": _dense, "factorized": _factorized}
NEEDS_RANK = frozenset({"factorized"})  # dense kinds whose rank is required
# options only the factorized kind has, with the defaults every kind accepts
FACTORIZED_OPTIONS = {"init": "default", "frobenius_decay": 0.0}

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": nnx.gelu,  # tanh approximation
    "gelu_exact": lambda x: nnx.gelu(x, approximate=False),  # erf, as BERT
    "relu": nnx.relu,
    "silu": nnx.silu,
}


def check_dense(
    kind: str, rank: int | None, in_features: int, out_features: int, **options
) -> None:
    """Check a dense kind, its rank and options (``init``, ``frobenius_decay``: the
    factorized kind's) for an ``in x out`` layer; errors name the field."""
    check_choice(kind, "kind", sorted(DENSE))
    if kind in NEEDS_RANK:
        if rank is None:
            fail("rank", f"set: dense kind {kind!r} needs a rank (an integer >= 1)", rank)
        check_rank(rank, in_features, out_features)
    options = {**FACTORIZED_OPTIONS, **options}
    if kind == "factorized":
        check_init(options["init"], options["frobenius_decay"])
        return
    for field, default in FACTORIZED_OPTIONS.items():
        if options[field] != default:
            allowed = f"{default!r} for dense kind {kind!r} (an option of the factorized kind)"
            fail(field, allowed, options[field])


def make_dense(
    kind: str,
    in_features: int,
    out_features: int,
    *,
    rank: int | None = None,
    use_bias: bool = True,
    kernel_axes: KernelAxes = (None, None),
    dtype: jnp.dtype | None = None,
    param_dtype: jnp.dtype = jnp.float32,
    rngs: nnx.Rngs,
    **options,
) -> nnx.Module:
    """Build a dense layer of a registered kind (``"dense"`` ignores ``rank``);
    ``options``: the factorized kind's ``init`` and ``frobenius_decay``.

    Example:
      >>> from flax import nnx
      >>> type(make_dense("factorized", 16, 32, rank=4, rngs=nnx.Rngs(0))).__name__
      'FactorizedDense'
    """
    check_dense(kind, rank, in_features, out_features, **options)
    return DENSE[kind](
        in_features,
        out_features,
        rank=rank,
        use_bias=use_bias,
        kernel_axes=tuple(kernel_axes),
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
        **options,
    )
