"""Multi-head attention: Q, K, V and output projections around any attention mixer.

    attn(x, mask) = out(mixer(split(query(x)), split(key(x)), split(value(x)), mask))

with x: [B, N, D] -> [B, N, D] and the mixer working on [B, N, H, K], K = D / H.
The four projections are built by ``make_dense``, so ``dense_kind="factorized"``
makes them low-rank and ``surgery.apply_lora`` can target them by path
(``...attention.query``). Every attention kind is this module with a different
mixer; nothing here depends on the kind.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float

from lowrank_jax.axes import EMBED, HEADS
from lowrank_jax.config import fail
from lowrank_jax.layers import make_dense


def check_heads(dim: int, heads: int) -> None:
    """D must split into H heads: ``ConfigError`` naming ``dim`` otherwise."""
    if dim % heads:
        fail("dim", f"a multiple of heads = {heads}", dim)


class MultiHeadAttention(nnx.Module):
    """Projections + mixer.

    Args:
      dim: D, the model width; a multiple of ``heads``.
      heads: H.
      mixer: an attention mixer, ``(q, k, v, mask) -> out`` on [B, N, H, K].
      dense_kind, rank: the dense kind of the four projections (``make_dense``).
      dense_options: that kind's options (``init``, ``frobenius_decay``).
      dtype: computation dtype of the projections.
      rngs: random streams.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mixer: nnx.Module,
        *,
        dense_kind: str = "dense",
        rank: int | None = None,
        dense_options: dict | None = None,
        dtype: jnp.dtype | None = None,
        rngs: nnx.Rngs,
    ):
        check_heads(dim, heads)

        def dense(axes):
            return make_dense(
                dense_kind,
                dim,
                dim,
                rank=rank,
                kernel_axes=axes,
                dtype=dtype,
                rngs=rngs,
                **(dense_options or {}),
            )

        self.query, self.key, self.value = (
            dense((EMBED, HEADS)),
            dense((EMBED, HEADS)),
            dense((EMBED, HEADS)),
        )
        self.mixer = mixer
        self.out = dense((HEADS, EMBED))
        self.heads = heads

    def __call__(
        self, x: Float[Array, "B N D"], mask: Bool[Array, "B N"] | None = None
    ) -> Float[Array, "B N D"]:
        batch, length, dim = x.shape

        def split(y):  # [B, N, D] -> [B, N, H, K]
            return y.reshape(batch, length, self.heads, dim // self.heads)

        mixed = self.mixer(split(self.query(x)), split(self.key(x)), split(self.value(x)), mask)
        return self.out(mixed.reshape(batch, length, dim))
