"""Exact softmax attention (Vaswani et al. 2017, arXiv 1706.03762, Eq. 1), the baseline.

    attend(q, k, v) = softmax(q·kᵀ / √K) · v,    q, k, v: [B, N, H, K] -> [B, N, H, K]

Without attention dropout it is ``jax.nn.dot_product_attention`` (XLA's fused
kernels; cuDNN on GPU when it applies). With dropout the weights are formed
explicitly so that they can be dropped.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float


def attend(
    q: Float[Array, "B N H K"],
    k: Float[Array, "B S H K"],
    v: Float[Array, "B S H K"],
    mask: Bool[Array, "B S"] | None = None,
    causal: bool = False,
    *,
    dropout: Callable[[Array], Array] | None = None,
) -> Float[Array, "B N H K"]:
    """Exact attention; ``mask`` marks real keys (True), ``dropout`` drops weights.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.ones((2, 8, 2, 4))
      >>> attend(x, x, x, mask=jnp.ones((2, 8), bool)).shape
      (2, 8, 2, 4)
    """
    key_mask = None if mask is None else mask[:, None, None, :]  # [B, 1, 1, S]
    if dropout is None:
        return jax.nn.dot_product_attention(q, k, v, mask=key_mask, is_causal=causal)
    logits = jnp.einsum("bnhk,bshk->bhns", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    allowed = jnp.ones(logits.shape[-2:], bool) if key_mask is None else key_mask
    if causal:
        allowed = allowed & jnp.tril(jnp.ones(logits.shape[-2:], bool))
    logits = jnp.where(allowed, logits, jnp.finfo(logits.dtype).min)
    weights = dropout(jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype))
    return jnp.einsum("bhns,bshk->bnhk", weights, v)


def weight_dropout(rate: float, rngs: nnx.Rngs) -> nnx.Dropout | None:
    """An ``nnx.Dropout`` for attention weights, or None when the rate is 0."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"attention dropout must be in [0, 1), got {rate!r}")
    return nnx.Dropout(rate, rngs=rngs) if rate > 0 else None


def active(dropout: nnx.Dropout | None) -> nnx.Dropout | None:
    """The dropout to apply now: None in eval mode (``model.eval()``) or at rate 0."""
    return None if dropout is None or dropout.deterministic else dropout


class SoftmaxAttention(nnx.Module):
    """The exact mixer: ``(q, k, v, mask) -> out`` on [B, N, H, K].

    Args:
      heads, head_dim, max_len, shared: the context every mixer receives (unused here).
      dropout: attention-weight dropout rate (applied in training mode).
      rngs: random streams (``dropout``).
    """

    def __init__(
        self,
        *,
        heads: int,
        head_dim: int,
        max_len: int,
        dropout: float = 0.0,
        shared: dict | None = None,
        rngs: nnx.Rngs,
    ):
        del heads, head_dim, max_len, shared
        self.dropout = weight_dropout(dropout, rngs)

    def __call__(self, q, k, v, mask=None):
        return attend(q, k, v, mask, dropout=active(self.dropout))
