"""The attention family and its registry.

Each kind is a *mixer*, ``(q, k, v, mask) -> out`` on [B, N, H, K], wrapped by
``MultiHeadAttention`` (its Q/K/V/output projections come from the dense kinds).
``make_attention(kind, ...)`` builds one by name; the encoder never branches on
the kind. The pure maths is exposed as functions: ``softmax.attend``,
``performer.favor``, ``performer.random_features``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import jax.numpy as jnp
from flax import nnx

from lowrank_jax.attention.linformer import LinformerAttention
from lowrank_jax.attention.multihead import MultiHeadAttention
from lowrank_jax.attention.performer import PerformerAttention
from lowrank_jax.attention.softmax import SoftmaxAttention

ATTENTION: dict[str, type[nnx.Module]] = {
    "softmax": SoftmaxAttention,
    "linformer": LinformerAttention,
    "performer": PerformerAttention,
}

# What every mixer receives from the model; the rest of its signature are its options.
_CONTEXT = {"heads", "head_dim", "max_len", "dropout", "shared", "rngs"}

__all__ = ["ATTENTION", "MultiHeadAttention", "make_attention", "options_of"]


def options_of(kind: str) -> tuple[str, ...]:
    """The kind-specific options of an attention kind, e.g. ``("proj_len", "sharing")``."""
    _check_kind(kind)
    params = inspect.signature(ATTENTION[kind].__init__).parameters
    return tuple(name for name in params if name not in _CONTEXT | {"self"})


def _check_kind(kind: str) -> None:
    if kind not in ATTENTION:
        raise ValueError(
            f"unknown attention kind {kind!r}; valid kinds: {', '.join(sorted(ATTENTION))}"
        )


def make_attention(
    kind: str,
    dim: int,
    heads: int,
    *,
    max_len: int,
    dropout: float = 0.0,
    options: Mapping | None = None,
    dense_kind: str = "dense",
    rank: int | None = None,
    shared: dict | None = None,
    dtype: jnp.dtype | None = None,
    rngs: nnx.Rngs,
) -> MultiHeadAttention:
    """Build ``MultiHeadAttention`` with the mixer of ``kind``.

    ``options`` are the kind's own (``options_of(kind)``); an unknown one raises
    ``ValueError`` listing the valid ones.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> attn = make_attention("linformer", 16, 2, max_len=8, options={"proj_len": 4},
      ...                       rngs=nnx.Rngs(0))
      >>> attn(jnp.ones((2, 8, 16)), jnp.ones((2, 8), bool)).shape
      (2, 8, 16)
    """
    _check_kind(kind)
    options = dict(options or {})
    unknown = sorted(set(options) - set(options_of(kind)))
    if unknown:
        raise ValueError(
            f"unknown option {unknown[0]!r} for attention kind {kind!r}; "
            f"valid: {', '.join(options_of(kind)) or '(none)'}"
        )
    if dim % heads:
        raise ValueError(f"dim {dim} must be a multiple of heads {heads}")
    mixer = ATTENTION[kind](
        heads=heads,
        head_dim=dim // heads,
        max_len=max_len,
        dropout=dropout,
        shared=shared if shared is not None else {},
        rngs=rngs,
        **options,
    )
    return MultiHeadAttention(
        dim, heads, mixer, dense_kind=dense_kind, rank=rank, dtype=dtype, rngs=rngs
    )
