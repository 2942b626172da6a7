import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lowrank_jax.attention import make_attention
from lowrank_jax.attention.softmax import attend


def _qkv(b=2, n=8, h=2, k=4, seed=0):
    return jax.random.normal(jax.random.key(seed), (3, b, n, h, k))


def _reference(q, k, v, mask=None, causal=False):
    logits = np.einsum("bnhk,bshk->bhns", q, k) / np.sqrt(q.shape[-1])
    allowed = np.ones(logits.shape, bool)
    if mask is not None:
        allowed &= np.asarray(mask)[:, None, None, :]
    if causal:
        allowed &= np.tril(np.ones(logits.shape[-2:], bool))
    logits = np.where(allowed, logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhns,bshk->bnhk", weights, v)


def test_attend_matches_reference_with_mask_and_causal():
    q, k, v = _qkv()
    mask = jnp.arange(8)[None, :] < jnp.array([[8], [5]])
    # float32 against float64: logits off by δ <= (K+1)·u·Σ|q||k|/√K (K=4, Σ <= 3.4) = 1e-6,
    # the output by <= max|v|·(2δ + (2N+6)·u) = 3.2·(2e-6 + 1.3e-6) -> 1.1e-5 (u = 2^-24)
    for causal in (False, True):
        expected = _reference(q, k, v, mask, causal)
        np.testing.assert_allclose(attend(q, k, v, mask, causal), expected, atol=2e-5)
        # the explicit path (taken when dropout is active) computes the same thing
        np.testing.assert_allclose(
            attend(q, k, v, mask, causal, dropout=lambda w: w), expected, atol=2e-5
        )


def test_dropout_applied_in_training_only():
    attn = make_attention("softmax", 16, 2, max_len=8, dropout=0.5, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 8, 16))
    train_a, train_b = attn(x), attn(x)
    assert np.abs(np.asarray(train_a - train_b)).max() > 1e-4  # fresh masks each call
    attn.eval()
    np.testing.assert_array_equal(attn(x), attn(x))
