"""Linformer attention (Wang et al. 2020, arXiv 2006.04768, Eq. 7).

Keys and values are projected along the sequence, N -> P, by E and F: [P, N_max]
(sliced to the actual N), so the attention matrix is [N, P] instead of [N, N]:

    out = softmax(q · (E·k)ᵀ / √K) · (F·v),    q, k, v: [B, N, H, K] -> [B, N, H, K]

Sharing (Section 4): ``none`` (an E and F per head), ``headwise`` (one E and F
per layer), ``kv`` (one E = F per layer), ``layerwise`` (one E = F for the whole
model). Two faults of the Long Range Arena code are avoided: the configured P
is the one used, and padded positions are zeroed before projecting, so they
contribute nothing.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float

from lowrank_jax.attention.softmax import active, attend, recorder, weight_dropout
from lowrank_jax.axes import LENGTH
from lowrank_jax.config import check_choice, check_int
from lowrank_jax.layers.common import annotated

SHARING = ("none", "headwise", "kv", "layerwise")


class LinformerProjections(nnx.Module):
    """E (and F, unless shared with E) for one layer, or for the whole model.

    Initialised U(-1/√P, 1/√P), as in the widely used PyTorch implementation
    (the paper does not specify it). Shapes: [H, P, N_max] with sharing ``none``,
    else [P, N_max].
    """

    def __init__(self, *, heads: int, proj_len: int, max_len: int, sharing: str, rngs: nnx.Rngs):
        shape = (heads, proj_len, max_len) if sharing == "none" else (proj_len, max_len)
        axes = (None,) * (len(shape) - 1) + (LENGTH,)
        bound = 1.0 / jnp.sqrt(proj_len)
        init = nnx.initializers.uniform(2 * bound)

        def draw():
            return annotated(nnx.Param, init(rngs.params(), shape) - bound, axes)

        self.e = draw()
        self.f = draw() if sharing in ("none", "headwise") else nnx.data(None)

    def project(
        self, k: Float[Array, "B N H K"], v: Float[Array, "B N H K"]
    ) -> tuple[Float[Array, "B P H K"], Float[Array, "B P H K"]]:
        n = k.shape[1]
        e = self.e[..., :n]
        f = e if self.f is None else self.f[..., :n]
        spec = "hpn,bnhk->bphk" if e.ndim == 3 else "pn,bnhk->bphk"
        return jnp.einsum(spec, e.astype(k.dtype), k), jnp.einsum(spec, f.astype(v.dtype), v)


class LinformerAttention(nnx.Module):
    """The Linformer mixer: ``(q, k, v, mask) -> out`` on [B, N, H, K].

    Args:
      heads, head_dim, max_len: the attention's shape; N may not exceed max_len.
      proj_len: P, an integer in [1, max_len].
      sharing: one of ``SHARING``; ``layerwise`` keeps its E in ``shared``, a
        dict the encoder passes to every layer, so all layers use one E.
      dropout: attention-weight dropout rate (applied in training mode).
      rngs: random streams (``params``, ``dropout``).
    """

    def __init__(
        self,
        *,
        heads: int,
        head_dim: int,
        max_len: int,
        proj_len: int = 64,
        sharing: str = "none",
        dropout: float = 0.0,
        shared: dict | None = None,
        rngs: nnx.Rngs,
    ):
        del head_dim
        self.check(max_len=max_len, dropout=dropout, proj_len=proj_len, sharing=sharing)
        args = {"heads": heads, "proj_len": proj_len, "max_len": max_len, "sharing": sharing}
        if sharing == "layerwise":
            if shared is None:
                raise ValueError("sharing 'layerwise' needs the model's shared dict")
            key = ("linformer", proj_len, max_len)
            if key not in shared:
                shared[key] = LinformerProjections(**args, rngs=rngs)
            self.projections = shared[key]
        else:
            self.projections = LinformerProjections(**args, rngs=rngs)
        self.max_len = max_len
        self.proj_len = proj_len
        self.sharing = sharing
        self.dropout = weight_dropout(dropout, rngs)
        self.record = False  # sow the [N, P] weights (``models.encoder.capture_intermediates``)

    @classmethod
    def check(cls, *, max_len: int, dropout: float, proj_len: int, sharing: str) -> None:
        """The options' checks (``ConfigError`` naming ``linformer.<option>``)."""
        del dropout  # the [N, P] weights are dropped when the rate is > 0
        check_int(proj_len, "linformer.proj_len", high=max_len, why=f"max_len = {max_len}")
        check_choice(sharing, "linformer.sharing", SHARING)

    def __call__(
        self,
        q: Float[Array, "B N H K"],
        k: Float[Array, "B N H K"],
        v: Float[Array, "B N H K"],
        mask: Bool[Array, "B N"] | None = None,
    ) -> Float[Array, "B N H K"]:
        if k.shape[1] > self.max_len:
            raise ValueError(
                f"sequence length {k.shape[1]} exceeds Linformer max_len {self.max_len}"
            )
        if mask is not None:  # padded keys and values must contribute nothing to E·k, F·v
            keep = mask[:, :, None, None].astype(k.dtype)
            k, v = k * keep, v * keep
        k, v = self.projections.project(k, v)  # [B, P, H, K]
        return attend(q, k, v, dropout=active(self.dropout), record=recorder(self))
