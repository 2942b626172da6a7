"""Exact softmax attention (Vaswani et al. 2017, arXiv 1706.03762, Eq. 1), the baseline.

    attend(q, k, v) = softmax(q·kᵀ / √K) · v,    q, k, v: [B, N, H, K] -> [B, N, H, K]

Without attention dropout it is, by ``implementation``:

- ``"xla"``: ``jax.nn.dot_product_attention`` as XLA compiles it;
- ``"cudnn"``: the same call with cuDNN's fused flash kernel (GPU, bf16/fp16);
- ``"blocked"``: ``blocked.blocked_attend``, query blocks with a recomputing
  backward, which never forms the [B, H, N, N] tensor (the CPU's fast path);
- ``"auto"``: ``blocked`` on the CPU from N = 1024 up, else ``xla``.

With dropout the weights are formed explicitly so that they can be dropped.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float

from lowrank_jax.attention.blocked import blocked_attend
from lowrank_jax.config import check_choice, check_rate

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "blocked")
BLOCKED_FROM = 1024  # "auto" on the CPU: blocked from this many queries up


def attend(
    q: Float[Array, "B N H K"],
    k: Float[Array, "B S H K"],
    v: Float[Array, "B S H K"],
    mask: Bool[Array, "B S"] | None = None,
    causal: bool = False,
    *,
    dropout: Callable[[Array], Array] | None = None,
    implementation: str = "xla",
    record: Callable[[Array], object] | None = None,
) -> Float[Array, "B N H K"]:
    """Exact attention; ``mask`` marks real keys (True), ``dropout`` drops weights.

    ``record(weights)``, if given, receives the attention weights [B, H, N, S]
    (it forces the explicit-weights path, as dropout does).

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.ones((2, 8, 2, 4))
      >>> attend(x, x, x, mask=jnp.ones((2, 8), bool)).shape
      (2, 8, 2, 4)
    """
    check_choice(implementation, "implementation", IMPLEMENTATIONS)
    if implementation == "auto":
        cpu = jax.default_backend() == "cpu"
        implementation = "blocked" if cpu and q.shape[1] >= BLOCKED_FROM else "xla"
    key_mask = None if mask is None else mask[:, None, None, :]  # [B, 1, 1, S]
    explicit = dropout is not None or record is not None
    if not explicit and implementation == "blocked":
        return blocked_attend(q, k, v, mask, causal)
    if not explicit:
        return jax.nn.dot_product_attention(
            q, k, v, mask=key_mask, is_causal=causal, implementation=implementation
        )
    logits = jnp.einsum("bnhk,bshk->bhns", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    allowed = jnp.ones(logits.shape[-2:], bool) if key_mask is None else key_mask
    if causal:
        allowed = allowed & jnp.tril(jnp.ones(logits.shape[-2:], bool))
    logits = jnp.where(allowed, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    if record is not None:
        record(weights)
    if dropout is not None:
        weights = dropout(weights)
    return jnp.einsum("bhns,bshk->bnhk", weights, v)


def weight_dropout(rate: float, rngs: nnx.Rngs) -> nnx.Dropout | None:
    """An ``nnx.Dropout`` for attention weights, or None when the rate is 0."""
    check_rate(rate, "dropout")
    return nnx.Dropout(rate, rngs=rngs) if rate > 0 else None


def active(dropout: nnx.Dropout | None) -> nnx.Dropout | None:
    """The dropout to apply now: None in eval mode (``model.eval()``) or at rate 0."""
    return None if dropout is None or dropout.deterministic else dropout


def recorder(mixer: nnx.Module) -> Callable[[Array], object] | None:
    """``attend``'s ``record``: sow the weights as ``attention_weights`` when ``mixer.record``."""
    if not mixer.record:
        return None
    return lambda weights: mixer.sow(nnx.Intermediate, "attention_weights", weights)


class SoftmaxAttention(nnx.Module):
    """The exact mixer: ``(q, k, v, mask) -> out`` on [B, N, H, K].

    Args:
      heads, head_dim, max_len, shared: the context every mixer receives (unused here).
      dropout: attention-weight dropout rate (applied in training mode).
      implementation: auto | xla | cudnn | blocked (see the module docstring).
      rngs: random streams (``dropout``).
    """

    def __init__(
        self,
        *,
        heads: int,
        head_dim: int,
        max_len: int,
        dropout: float = 0.0,
        implementation: str = "auto",
        shared: dict | None = None,
        rngs: nnx.Rngs,
    ):
        del heads, head_dim, shared
        self.check(max_len=max_len, dropout=dropout, implementation=implementation)
        self.dropout = weight_dropout(dropout, rngs)
        self.implementation = implementation
        self.record = False  # sow the weights (``models.encoder.capture_intermediates``)

    @classmethod
    def check(cls, *, max_len: int, dropout: float, implementation: str) -> None:
        """The options' checks (``ConfigError`` naming ``softmax.<option>``)."""
        del max_len, dropout  # any length; weights are dropped when the rate is > 0
        check_choice(implementation, "softmax.implementation", IMPLEMENTATIONS)

    def __call__(self, q, k, v, mask=None):
        return attend(
            q,
            k,
            v,
            mask,
            dropout=active(self.dropout),
            implementation=self.implementation,
            record=recorder(self),
        )
