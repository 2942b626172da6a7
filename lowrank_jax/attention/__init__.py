"""The attention family and its registry.

Each kind is a *mixer*, ``(q, k, v, mask) -> out`` on [B, N, H, K], wrapped by
``MultiHeadAttention`` (its Q/K/V/output projections come from the dense kinds).
``make_attention(kind, ...)`` builds one by name; the encoder never branches on
the kind. Each kind is its own spec: its options' defaults are its constructor's
keyword defaults (``options_of``) and its checks its ``check`` classmethod,
which the constructor and the config validation both call. The pure maths is
exposed as functions: ``softmax.attend``, ``performer.favor``,
``performer.random_features``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import jax.numpy as jnp
from flax import nnx

from lowrank_jax.attention.linformer import LinformerAttention
from lowrank_jax.attention.multihead import MultiHeadAttention, check_heads
from lowrank_jax.attention.performer import PerformerAttention
from lowrank_jax.attention.softmax import SoftmaxAttention
from lowrank_jax.config import check_choice, check_known, check_rate

ATTENTION: dict[str, type[nnx.Module]] = {
    "softmax": SoftmaxAttention,
    "linformer": LinformerAttention,
    "performer": PerformerAttention,
}

# What every mixer receives from the model; the rest of its signature are its options.
_CONTEXT = {"heads", "head_dim", "max_len", "dropout", "shared", "rngs"}

__all__ = ["ATTENTION", "MultiHeadAttention", "check_attention", "make_attention", "options_of"]


def options_of(kind: str) -> dict[str, object]:
    """The options of an attention kind with their defaults, read off its signature.

    The signature is the only place a default is written: ``default_config()``
    is assembled from this, so a config and ``make_attention(kind)`` always agree.

    Example:
      >>> options_of("linformer")
      {'proj_len': 64, 'sharing': 'none'}
    """
    check_choice(kind, "kind", sorted(ATTENTION))
    params = inspect.signature(ATTENTION[kind].__init__).parameters
    return {
        name: param.default for name, param in params.items() if name not in _CONTEXT | {"self"}
    }


def check_attention(kind: str, options: Mapping, *, max_len: int, dropout: float) -> None:
    """Check a kind, its options (unknown ones and values) and the attention dropout.

    Errors name the field as ``config.model.attention`` does (``kind``, ``dropout``,
    ``linformer.proj_len``...); the caller prefixes the path (``config.within``).
    """
    valid = options_of(kind)
    check_known(options, valid, kind)
    check_rate(dropout, "dropout")
    ATTENTION[kind].check(**{**valid, **options}, max_len=max_len, dropout=dropout)


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
    dense_options: dict | None = None,
    shared: dict | None = None,
    dtype: jnp.dtype | None = None,
    rngs: nnx.Rngs,
) -> MultiHeadAttention:
    """Build ``MultiHeadAttention`` with the mixer of ``kind``.

    ``options`` are the kind's own (``options_of(kind)``); an unknown one raises
    ``ConfigError`` listing the valid ones. ``dense_kind``, ``rank`` and
    ``dense_options`` build the four projections (``layers.make_dense``).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> attn = make_attention("linformer", 16, 2, max_len=8, options={"proj_len": 4},
      ...                       rngs=nnx.Rngs(0))
      >>> attn(jnp.ones((2, 8, 16)), jnp.ones((2, 8), bool)).shape
      (2, 8, 16)
    """
    options = dict(options or {})
    check_attention(kind, options, max_len=max_len, dropout=dropout)
    check_heads(dim, heads)
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
        dim,
        heads,
        mixer,
        dense_kind=dense_kind,
        rank=rank,
        dense_options=dense_options,
        dtype=dtype,
        rngs=rngs,
    )
