import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lowrank_jax.attention import make_attention
from lowrank_jax.attention.linformer import LinformerAttention
from lowrank_jax.attention.softmax import attend


def _qkv(n=8):
    return jax.random.normal(jax.random.key(0), (3, 2, n, 2, 4))


@pytest.mark.parametrize("sharing", ["none", "headwise", "kv"])
def test_identity_projections_with_p_equal_n_is_softmax(sharing):
    mixer = LinformerAttention(
        heads=2, head_dim=4, max_len=8, proj_len=8, sharing=sharing, rngs=nnx.Rngs(0)
    )
    eye = jnp.eye(8) if sharing != "none" else jnp.broadcast_to(jnp.eye(8), (2, 8, 8))
    mixer.projections.e[...] = eye
    if mixer.projections.f is not None:
        mixer.projections.f[...] = eye
    q, k, v = _qkv()
    # E·k with E = I is exact; two float32 attentions, each within max|v|·(2δ + (2N+6)·u)
    # (δ = 5·u·3.4, N=8, max|v| = 3.2, u = 2^-24) = 1.1e-5 of the exact one
    np.testing.assert_allclose(mixer(q, k, v), attend(q, k, v), atol=3e-5)


@pytest.mark.parametrize(
    ("sharing", "shape", "has_f"),
    [
        ("none", (2, 3, 8), True),
        ("headwise", (3, 8), True),
        ("kv", (3, 8), False),
    ],
)
def test_configured_proj_len_is_used(sharing, shape, has_f):
    mixer = LinformerAttention(
        heads=2, head_dim=4, max_len=8, proj_len=3, sharing=sharing, rngs=nnx.Rngs(0)
    )
    assert mixer.projections.e.shape == shape
    assert (mixer.projections.f is not None) == has_f
    _, k, v = _qkv(n=6)  # shorter than max_len: E is sliced to N
    kp, vp = mixer.projections.project(k, v)
    assert kp.shape == vp.shape == (2, 3, 2, 4)


def test_layerwise_sharing_uses_one_e_for_all_layers():
    shared = {}
    layers = [
        LinformerAttention(
            heads=2,
            head_dim=4,
            max_len=8,
            proj_len=3,
            sharing="layerwise",
            shared=shared,
            rngs=nnx.Rngs(i),
        )
        for i in range(3)
    ]
    assert all(layer.projections is layers[0].projections for layer in layers)
    assert layers[0].projections.f is None


def test_padded_positions_contribute_nothing():
    attn = make_attention("linformer", 16, 2, max_len=12, options={"proj_len": 4}, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 8, 16))
    padded = jnp.concatenate([x, 100.0 * jnp.ones((2, 4, 16))], axis=1)
    mask = jnp.arange(12)[None] < 8
    # padded k, v are zeroed: E·k gains exact zeros, only the order of the real sums may
    # change: 2·u·(12 + 8 + 4 + 16 terms)·Σ|terms| (<~ 3) -> 1.4e-5 (u = 2^-24); a leak
    # of the 100.0 padding would move the output by O(1)
    np.testing.assert_allclose(
        attn(padded, jnp.broadcast_to(mask, (2, 12)))[:, :8], attn(x), atol=3e-5
    )


def test_errors():
    with pytest.raises(ValueError, match=r"^linformer\.proj_len: must be an integer in \[1, 8\]"):
        LinformerAttention(heads=2, head_dim=4, max_len=8, proj_len=9, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError,
        match=r"^linformer.sharing: must be one of none, headwise, kv, layerwise, got 'all'",
    ):
        LinformerAttention(
            heads=2, head_dim=4, max_len=8, proj_len=4, sharing="all", rngs=nnx.Rngs(0)
        )
    mixer = LinformerAttention(heads=2, head_dim=4, max_len=8, proj_len=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="sequence length 9 exceeds Linformer max_len 8"):
        mixer(*_qkv(n=9))
