"""Exact softmax attention in query blocks, memory-efficient (flash-style), for the CPU.

    blocked_attend(q, k, v, mask) == softmax(q·kᵀ / √K) · v      q, k, v: [B, N, H, K]

XLA's CPU attention (``jax.nn.dot_product_attention``) forms the whole
[B, H, N, N] score tensor, keeps the weights for the backward pass and streams
both through memory several times: at N = 4096 that is 1 GiB per tensor for
B = 4, H = 4, and the step is bound by memory (and by first-touch page faults
on freshly allocated outputs), not by FLOPs. Here each (sequence, head) is
one iteration of a ``lax.map`` and, inside it, the queries are taken ``block``
at a time (a ``lax.scan``), each tile against all keys as plain 2-D matmuls:
a tile's [block, N] scores stay in cache and its buffers are reused by every
iteration. The forward keeps only the output and the log-sum-exp of each row;
the backward (a ``custom_vjp``) recomputes a tile's weights from them
(FlashAttention, Dao et al. 2022, arXiv 2205.14135, Alg. 2 and 4, with the key
loop done in one product: every key fits). The backward takes the keys in
tiles instead (FlashAttention-2's order, Dao 2023, arXiv 2307.08691), so its
dK and dV products contract over all N queries rather than over a thin tile.

Memory: O(block·N) for scores instead of O(B·H·N²). FLOPs: one more QKᵀ
product in the backward than the materialising version.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

_NEG = -1e30  # masked scores: finite, so an all-masked row gives uniform weights, not NaN


def _heads(x: Array) -> Array:
    """[B, N, H, K] -> [B·H, N, K]: one row of work per (sequence, head)."""
    b, n, h, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b * h, n, d)


def _unheads(x: Array, b: int) -> Array:
    """[B·H, N, K] -> [B, N, H, K]."""
    bh, n, d = x.shape
    return x.reshape(b, bh // b, n, d).transpose(0, 2, 1, 3)


def _tiles(x: Array, block: int) -> Array:
    """[N, K] -> [N/block, block, K], N zero-padded to a multiple of block."""
    x = jnp.pad(x, ((0, -x.shape[0] % block), (0, 0)))
    return x.reshape(-1, block, x.shape[-1])


def _bias(key_bias: Array | None, causal: bool, start: Array, block: int) -> Array:
    """Additive score bias [block, S] of one query tile: padded keys, future keys."""
    if key_bias is None:
        return 0.0
    if not causal:
        return key_bias[None, :]
    rows = start + jnp.arange(block)[:, None]
    return key_bias[None, :] + jnp.where(jnp.arange(key_bias.shape[0]) <= rows, 0.0, _NEG)


def _key_bias(mask: Array | None, causal: bool, b: int, h: int, s: int) -> Array | None:
    """[B·H, S]: 0 for real keys, _NEG for padding; None when nothing is masked."""
    if mask is None:
        return jnp.zeros((b * h, s), jnp.float32) if causal else None
    return jnp.repeat(jnp.where(mask, 0.0, _NEG).astype(jnp.float32), h, axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attend(q, k, v, mask, causal, block):
    return _forward(q, k, v, mask, causal, block)[0]


def _forward(q, k, v, mask, causal, block):
    (b, n, h, d), s = q.shape, k.shape[1]
    scale = 1.0 / math.sqrt(d)

    def head(inputs):  # one (sequence, head): a scan over its query tiles
        qt, kk, vv, key_bias = inputs
        kt = kk.T  # [K, S], once per head

        def tile(_, inputs):
            index, qb = inputs
            scores = (qb * scale) @ kt + _bias(key_bias, causal, index * block, block)
            top = scores.max(-1, keepdims=True)
            p = jnp.exp(scores - top)
            total = p.sum(-1, keepdims=True)
            return None, ((p @ vv) / total, (top + jnp.log(total))[:, 0])

        _, (out, lse) = jax.lax.scan(tile, None, (jnp.arange(qt.shape[0]), qt))
        return out, lse

    qt = jax.vmap(lambda x: _tiles(x, block))(_heads(q))  # [B·H, N/block, block, K]
    out, lse = jax.lax.map(head, (qt, _heads(k), _heads(v), _key_bias(mask, causal, b, h, s)))
    result = _unheads(out.reshape(b * h, -1, d)[:, :n], b)
    return result, (q, k, v, mask, out, lse)


def _attend_bwd(causal, block, residuals, grad):
    """FlashAttention-2's order: key tiles outside, so dK and dV contract over all queries."""
    q, k, v, mask, out, lse = residuals
    (b, n, h, d), s = q.shape, k.shape[1]
    scale = 1.0 / math.sqrt(d)
    queries = out.shape[1] * out.shape[2]  # N padded to the forward's query tiles

    def head(inputs):
        qq, gg, oo, ll, kk, vv, key_bias = inputs
        delta = jnp.sum(gg * oo, axis=-1)  # [N]: rowsum(dO ∘ O)
        qt, gt = (qq * scale).T, gg.T  # [K, N], once per head

        def tile(dq, inputs):
            index, kb, vb, bias = inputs
            scores_t = kb @ qt  # [block, N]: this tile's keys against every query
            if bias is not None:
                scores_t = scores_t + bias[:, None]
            if causal:
                keys = index * block + jnp.arange(block)[:, None]
                scores_t = scores_t + jnp.where(keys <= jnp.arange(queries), 0.0, _NEG)
            p_t = jnp.exp(scores_t - ll[None, :])  # the forward's weights, recomputed
            ds_t = p_t * (vb @ gt - delta[None, :]) * scale
            return dq + ds_t.T @ kb, (ds_t @ qq, p_t @ gg)

        tiles = _tiles(kk, block), _tiles(vv, block)
        biases = None if key_bias is None else _tiles(key_bias[:, None], block)[..., 0]
        dq, (dk, dv) = jax.lax.scan(
            tile, jnp.zeros_like(qq), (jnp.arange(tiles[0].shape[0]), *tiles, biases)
        )
        return dq, dk.reshape(-1, d)[:s], dv.reshape(-1, d)[:s]

    pad = ((0, 0), (0, queries - n), (0, 0))
    dq, dk, dv = jax.lax.map(
        head,
        (
            jnp.pad(_heads(q), pad),
            jnp.pad(_heads(grad), pad),
            out.reshape(b * h, queries, d),
            lse.reshape(b * h, queries),
            _heads(k),
            _heads(v),
            _key_bias(mask, causal, b, h, s),
        ),
    )
    mask_grad = None if mask is None else jnp.zeros(mask.shape, jax.dtypes.float0)
    return _unheads(dq[:, :n], b), _unheads(dk, b), _unheads(dv, b), mask_grad


_attend.defvjp(_forward, _attend_bwd)  # forward: (output, residuals)


def blocked_attend(
    q: Float[Array, "B N H K"],
    k: Float[Array, "B S H K"],
    v: Float[Array, "B S H K"],
    mask: Bool[Array, "B S"] | None = None,
    causal: bool = False,
    *,
    block: int = 128,
) -> Float[Array, "B N H K"]:
    """Exact attention, ``block`` queries at a time; ``mask`` marks real keys (True).

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.ones((2, 8, 2, 4))
      >>> blocked_attend(x, x, x, block=4).shape
      (2, 8, 2, 4)
    """
    if causal and q.shape[1] != k.shape[1]:
        raise ValueError(
            f"causal attention needs as many queries as keys, got {q.shape[1]}, {k.shape[1]}"
        )
    return _attend(q, k, v, mask, causal, min(block, q.shape[1]))
