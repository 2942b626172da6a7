"""FAVOR+'s feature maps and its bidirectional attention in sequence chunks.

``bidirectional`` is Performer's non-causal attention (``performer.favor``)
with the same result, computed ``chunk`` tokens at a time and with a backward
pass that recomputes the features instead of keeping them. Autodiff of the
plain formula keeps φ(q), φ(k) and their exponents, several [B, N, H, M]
tensors (64 MiB each at B = 4, N = 4K, H = 4, M = 256), for the backward; here
the backward keeps q, k, v, the output (float32) and its denominators, and
the [B, H, M, K] sums, and every [B, chunk, H, M] block is built, used and dropped inside a
loop over the sequence, so the memory is O(N·K + H·M·K + chunk·H·M).

The keys' stabiliser (the softmax kernel's one maximum over all real keys and
features) is found in the same pass that sums φ(k) ⊗ v: the running sums are
rescaled whenever the maximum grows (an online softmax), so the keys are
projected once, and the result equals the two-pass formula up to rounding.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

STABILIZER = {"softmax": 1e-6, "relu": 1e-3}
FLOOR = -1e30  # the shift of a padded key: exp(FLOOR - real shift) is 0
CHUNK = 256  # tokens per block of the sequence loops (the fastest tried at N = 4K on the CPU)


def projected(x: Float[Array, "B N H K"], features, kernel: str) -> Float[Array, "B N H M"]:
    """ωᵀx on x scaled by K^(-1/4); for the softmax kernel less ‖x‖²/2 (the exponent).

    No ``features`` (deterministic): x itself, unscaled, as LRA's generalized kernel.
    """
    if features is None:
        return x.astype(jnp.float32)
    x = x.astype(jnp.float32) * x.shape[-1] ** -0.25
    out = jnp.einsum("bnhk,mk->bnhm", x, features.astype(jnp.float32))
    if kernel == "softmax":
        out = out - 0.5 * jnp.sum(x * x, axis=-1, keepdims=True)
    return out


def phi(exponent: Float[Array, "B N H M"], shift, kernel: str) -> Float[Array, "B N H M"]:
    """φ from ``projected``: (exp(exponent − shift) + c) / √M, or (relu + c) / √M."""
    if kernel == "relu":
        out = jax.nn.relu(exponent) + STABILIZER[kernel]
    else:
        out = jnp.exp(exponent - jax.lax.stop_gradient(shift)) + STABILIZER[kernel]
    return out / math.sqrt(exponent.shape[-1])


def query_phi(q, features, kernel):
    """φ(q), each query stabilised by its own maximum (it cancels in the ratio)."""
    exponent = projected(q, features, kernel)
    return phi(exponent, jnp.max(exponent, axis=-1, keepdims=True), kernel)


def _key_phi(k, features, kernel, shift, real):
    """φ(k) with the keys' stabiliser ``shift`` given; padded keys get 0.

    A padded key's exponent is replaced before the exp (it may lie far above the
    real keys' maximum: inf · 0 would be NaN, in the value and in its gradient).
    """
    exponent = jnp.where(real > 0, projected(k, features, kernel), shift)
    return phi(exponent, shift, kernel) * real


def _blocks(x: Array, size: int) -> Array:
    """[B, N, ...] -> [N / size, B, size, ...], the scan's leading axis."""
    return jnp.moveaxis(x.reshape(x.shape[0], -1, size, *x.shape[2:]), 1, 0)


def _unblock(x: Array) -> Array:
    """The inverse of ``_blocks``."""
    x = jnp.moveaxis(x, 0, 1)
    return x.reshape(x.shape[0], -1, *x.shape[3:])


def bidirectional(
    q: Float[Array, "B N H K"],
    k: Float[Array, "B N H K"],
    v: Float[Array, "B N H K"],
    features: Float[Array, "M K"] | None,
    mask: Bool[Array, "B N"] | None = None,
    kernel: str = "softmax",
    chunk: int = CHUNK,
) -> Float[Array, "B N H K"]:
    """Non-causal FAVOR+ attention (``performer.favor``), chunked, recomputing backward.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.ones((2, 8, 2, 4))
      >>> bidirectional(x, x, x, jnp.eye(4), chunk=4).shape
      (2, 8, 2, 4)
    """
    n = q.shape[1]
    size = min(chunk, n)
    pad = -n % size
    real = jnp.ones(q.shape[:2], bool) if mask is None else mask
    if pad:  # padded positions are masked keys; their outputs are dropped
        widths = ((0, 0), (0, pad), (0, 0), (0, 0))
        q, k, v = (jnp.pad(x, widths) for x in (q, k, v))
        real = jnp.pad(real, ((0, 0), (0, pad)))
    # ω is constant here (the random features are state, never trained): no gradient
    features = None if features is None else jax.lax.stop_gradient(features)
    out = _favor(q, k, v, features, real.astype(jnp.float32)[:, :, None, None], kernel, size)
    return out[:, :n]


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _favor(q, k, v, features, real, kernel, size):
    return _forward(q, k, v, features, real, kernel, size)[0]


def _key_sums(k, v, features, real, kernel, size):
    """(Σ φ(k) ⊗ v [B, H, M, K], Σ φ(k) [B, H, M], shift [B, 1, H, 1]) over real keys."""
    b, _, h, d = v.shape
    m = d if features is None else features.shape[0]
    values = v.astype(jnp.float32)

    def add(carry, block):
        top, kv, z = carry
        k_b, v_b, real_b = block
        exponent = projected(k_b, features, kernel)
        if kernel == "relu":
            new_top, e = top, jax.nn.relu(exponent)
        else:  # the online maximum over real keys: earlier sums are rescaled to it
            masked = jnp.where(real_b > 0, exponent, FLOOR)
            new_top = jnp.maximum(top, jnp.max(masked, axis=(1, 3), keepdims=True))
            scale = jnp.exp(top - new_top)[:, 0]  # [B, H, 1]
            kv, z = kv * scale[..., None], z * scale
            e = jnp.exp(masked - new_top)
        e = e * real_b
        kv = kv + jnp.einsum("bnhm,bnhk->bhmk", e, v_b)
        return (new_top, kv, z + jnp.sum(e, axis=1)), None

    start = (
        jnp.full((b, 1, h, 1), FLOOR, jnp.float32),
        jnp.zeros((b, h, m, d), jnp.float32),
        jnp.zeros((b, h, m), jnp.float32),
    )
    blocks = tuple(_blocks(x, size) for x in (k, values, real))
    (top, kv, z), _ = jax.lax.scan(add, start, blocks)
    # the constant c of φ = (e + c) / √M, on every real key
    c = STABILIZER[kernel]
    kv = kv + c * jnp.sum(values * real, axis=1)[:, :, None, :]  # [B, H, 1, K]
    z = z + c * jnp.sum(real, axis=1)  # [B, 1, 1]: the number of real keys
    shift = jnp.where(top > FLOOR, top, 0.0)  # no real key: nothing to stabilise
    return kv / math.sqrt(m), z / math.sqrt(m), shift


def _forward(q, k, v, features, real, kernel, size):
    kv, z, shift = _key_sums(k, v, features, real, kernel, size)

    def attend(_, q_b):
        phi_q = query_phi(q_b, features, kernel)
        numerator = jnp.einsum("bnhm,bhmk->bnhk", phi_q, kv)
        denominator = jnp.einsum("bnhm,bhm->bnh", phi_q, z)
        denominator = jnp.where(denominator > 0, denominator, 1.0)  # no real key
        return None, (numerator / denominator[..., None], denominator)

    _, (out, denominator) = jax.lax.scan(attend, None, _blocks(q, size))
    out, denominator = _unblock(out), _unblock(denominator)
    saved = (q, k, v, features, real, kv, z, shift, out, denominator)
    return out.astype(v.dtype), saved


def _backward(kernel, size, saved, g):
    q, k, v, features, real, kv, z, shift, out, denominator = saved
    g = g.astype(jnp.float32)
    d_num = g / denominator[..., None]  # [B, N, H, K]
    d_den = -jnp.sum(g * out, axis=-1) / denominator  # [B, N, H]

    def query_side(carry, block):
        d_kv, d_z = carry
        q_b, d_num_b, d_den_b = block
        phi_q, pullback = jax.vjp(lambda x: query_phi(x, features, kernel), q_b)
        d_phi = jnp.einsum("bnhk,bhmk->bnhm", d_num_b, kv) + d_den_b[..., None] * z[:, None]
        d_kv = d_kv + jnp.einsum("bnhm,bnhk->bhmk", phi_q, d_num_b)
        d_z = d_z + jnp.einsum("bnhm,bnh->bhm", phi_q, d_den_b)
        return (d_kv, d_z), pullback(d_phi)[0]

    start = (jnp.zeros_like(kv), jnp.zeros_like(z))
    blocks = tuple(_blocks(x, size) for x in (q, d_num, d_den))
    (d_kv, d_z), d_q = jax.lax.scan(query_side, start, blocks)

    def key_side(_, block):
        k_b, v_b, real_b = block
        phi_k, pullback = jax.vjp(lambda x: _key_phi(x, features, kernel, shift, real_b), k_b)
        d_phi = jnp.einsum("bnhk,bhmk->bnhm", v_b.astype(jnp.float32), d_kv) + d_z[:, None]
        return None, (pullback(d_phi)[0], jnp.einsum("bnhm,bhmk->bnhk", phi_k, d_kv))

    _, (d_k, d_v) = jax.lax.scan(key_side, None, tuple(_blocks(x, size) for x in (k, v, real)))
    grads = (_unblock(d_q), _unblock(d_k), _unblock(d_v))
    d_q, d_k, d_v = (d.astype(x.dtype) for d, x in zip(grads, (q, k, v), strict=True))
    d_features = None if features is None else jnp.zeros_like(features)  # stop_gradient'ed
    return d_q, d_k, d_v, d_features, jnp.zeros_like(real)


_favor.defvjp(_forward, _backward)
