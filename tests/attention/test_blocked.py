"""Blocked (flash-style) exact attention equals XLA's, values and gradients, and saves memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lowrank_jax.attention import make_attention
from lowrank_jax.attention.blocked import blocked_attend
from lowrank_jax.attention.softmax import attend
from lowrank_jax.bench import compiled_bytes

CASES = [  # (N, block, causal, masked): ragged N (padded last tile), masks, causal, N < block
    (37, 8, False, True),
    (50, 16, True, True),
    (8, 256, True, False),
]


@pytest.mark.parametrize(("n", "block", "causal", "masked"), CASES)
def test_values_and_gradients_equal_xla_attention(n, block, causal, masked):
    q, k, v = jax.random.normal(jax.random.key(0), (3, 2, n, 3, 8))
    mask = jnp.arange(n)[None, :] < jnp.array([[n], [n - 5]]) if masked else None
    w = jax.random.normal(jax.random.key(1), q.shape)

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v) * w)

    ours = lambda q, k, v: blocked_attend(q, k, v, mask, causal, block=block)  # noqa: E731
    xla = lambda q, k, v: attend(q, k, v, mask, causal, implementation="xla")  # noqa: E731
    # float32, each path within max|v|·(2δ + (2N+6)·u) of exact attention, δ = 9·u·Σ|q||k|/√K
    # (K=8, Σ <= 6.5, N <= 50, max|v| = 3.4, u = 2^-24): 4.6e-5 each -> 1e-4; a wrong mask
    # or causal edge in the padded last tile moves an output by O(0.1)
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(jax.jit(ours)(q, k, v), jax.jit(xla)(q, k, v), atol=1e-4)
        grads = jax.jit(jax.grad(loss(ours), argnums=(0, 1, 2)))(q, k, v)
        expected = jax.jit(jax.grad(loss(xla), argnums=(0, 1, 2)))(q, k, v)
    # the backward's sums run over <= N + K = 58 terms of magnitude <~ 4·max|grad| (4.6):
    # ~√58·u·18 = 8e-6 per path, rounding at random; 1e-4 leaves margin (bugs are O(0.1))
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_all_masked_row_is_finite():
    q, k, v = jax.random.normal(jax.random.key(0), (3, 1, 8, 2, 4))
    out = jax.jit(lambda q, k, v: blocked_attend(q, k, v, jnp.zeros((1, 8), bool), block=4))(
        q, k, v
    )
    assert np.isfinite(np.asarray(out)).all()


def test_training_step_memory_is_linear_not_quadratic_in_n():
    """XLA's compiled fwd+bwd keeps [B, H, N, N]; the blocked one only block x N per step."""
    n = 2048  # compiled, never run
    q, k, v = jax.random.normal(jax.random.key(0), (3, 1, n, 2, 16))

    def step_bytes(implementation):
        grad = jax.grad(
            lambda q, k, v: attend(q, k, v, implementation=implementation).sum(), argnums=(0, 1, 2)
        )
        return compiled_bytes(jax.jit(grad).lower(q, k, v).compile())

    square = 2 * n * n * 4  # one float32 [B, H, N, N]
    assert step_bytes("xla") > square
    assert step_bytes("blocked") < square / 2  # about 3 [B, H, 256, N] blocks live at once


def test_auto_picks_blocked_on_the_cpu_for_long_inputs_and_bad_names_fail():
    q, k, v = jax.random.normal(jax.random.key(0), (3, 1, 1024, 1, 4))
    text = str(jax.make_jaxpr(lambda q: attend(q, k, v, implementation="auto"))(q))
    on_cpu = jax.default_backend() == "cpu"  # elsewhere auto is XLA's (cuDNN's) attention
    assert ("scan" in text and "custom_vjp" in text) == on_cpu
    with pytest.raises(
        ValueError,
        match=r"^softmax.implementation: must be one of auto, xla, cudnn, blocked, got 'fast'",
    ):
        make_attention(
            "softmax",
            8,
            2,
            max_len=8,
            options={"implementation": "fast"},
            rngs=nnx.Rngs(0),
        )
