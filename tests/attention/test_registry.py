"""The attention registry of ``lowrank_jax/attention/__init__.py`` and properties of every kind."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lowrank_jax.attention import ATTENTION, make_attention
from lowrank_jax.layers import FactorizedDense

OPTIONS = {"linformer": {"proj_len": 4}}


@pytest.mark.parametrize("kind", sorted(ATTENTION))
def test_padding_tokens_change_nothing(kind):
    attn = make_attention(kind, 16, 2, max_len=12, options=OPTIONS.get(kind), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 8, 16))
    real = jnp.arange(8)[None] < jnp.array([[8], [6]])  # the second row already has padding
    padded = jnp.concatenate([x, jax.random.normal(jax.random.key(2), (2, 4, 16))], axis=1)
    padded_mask = jnp.concatenate([real, jnp.zeros((2, 4), bool)], axis=1)
    out, out_padded = attn(x, real), attn(padded, padded_mask)
    # masked keys get weight exactly 0 (features exactly 0), so only the order of the real
    # sums may change: 2·u·(n ≈ 16 + 12 + 64 features + 8 + 16)·Σ|terms| (<~ 3) -> 4e-5
    # (u = 2^-24); a leaked padding key moves the output by O(0.1)
    np.testing.assert_allclose(out_padded[0, :8], out[0], atol=1e-4)
    np.testing.assert_allclose(out_padded[1, :6], out[1, :6], atol=1e-4)


@pytest.mark.parametrize("kind", sorted(ATTENTION))
def test_factorized_projections(kind):
    attn = make_attention(
        kind,
        16,
        2,
        max_len=8,
        options=OPTIONS.get(kind),
        dense_kind="factorized",
        rank=2,
        rngs=nnx.Rngs(0),
    )
    assert all(
        isinstance(getattr(attn, p), FactorizedDense) for p in ("query", "key", "value", "out")
    )
    assert attn(jnp.ones((2, 8, 16))).shape == (2, 8, 16)


def test_unknown_kind_and_option():
    with pytest.raises(
        ValueError,
        match=r"^kind: must be one of linformer, performer, softmax, got 'flash'",
    ):
        make_attention("flash", 16, 2, max_len=8, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError,
        match=r"^performer.proj_len: unknown field; valid: features_type, kernel, num_features",
    ):
        make_attention("performer", 16, 2, max_len=8, options={"proj_len": 4}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"^dim: must be a multiple of heads = 3, got 16"):
        make_attention("softmax", 16, 3, max_len=8, rngs=nnx.Rngs(0))
