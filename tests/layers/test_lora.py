import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lowrank_jax.layers import FactorizedDense, LoRA, macs_per_token

# Bounds below: u = 2^-24, float32's unit roundoff; a float32 sum of n products is off by
# at most n·u·Σ|terms| (Higham's γ_n), so two orders of it differ by at most twice that.

BASES = {
    "dense": lambda: nnx.Linear(16, 24, rngs=nnx.Rngs(0)),
    "factorized": lambda: FactorizedDense(16, 24, rank=3, rngs=nnx.Rngs(0)),
}


def _x():
    return jax.random.normal(jax.random.key(7), (2, 8, 16))


def _trained(lora):
    """Give B a non-zero value, as after some training."""
    b = lora.lora_b[...]
    lora.lora_b[...] = jax.random.normal(jax.random.key(3), b.shape, b.dtype)
    return lora


@pytest.mark.parametrize("kind", BASES)
def test_init_equals_base(kind):
    base = BASES[kind]()
    expected = base(_x())
    lora = LoRA(base, rank=2, alpha=8.0, dropout=0.5, rngs=nnx.Rngs(1))
    assert isinstance(lora.lora_a, nnx.LoRAParam) and isinstance(lora.lora_b, nnx.LoRAParam)
    assert float(jnp.abs(lora.lora_a[...]).sum()) > 0  # A random, B zero
    np.testing.assert_array_equal(lora(_x()), expected)


@pytest.mark.parametrize("kind", BASES)
def test_merged_equals_unmerged_and_unmerge_restores(kind):
    base = BASES[kind]()
    original = np.asarray(base(_x()))
    lora = _trained(LoRA(base, rank=2, alpha=4.0, rngs=nnx.Rngs(1)))
    unmerged = np.asarray(lora(_x()))
    assert np.abs(unmerged - original).max() > 1e-2  # the update really does something
    lora.merge()
    lora.merge()  # idempotent: a second merge must not add the update twice
    # x·(W + s·A·B) against x·W + s·(x·A)·B, K <= 21 terms each with Σ|x||W| <= 8.4 and
    # Σ|x||s·A·B| <= 20: 2·21·u·28 -> 7e-5 (one update too many would be off by ~10)
    np.testing.assert_allclose(lora(_x()), unmerged, atol=1e-4)
    np.testing.assert_allclose(base(_x()), unmerged, atol=1e-4)  # folded into the base
    lora.unmerge()
    # W + s·A·B - s·A·B: two roundings of |W| + |s·A·B| (<= 2.2), summed against Σ|x|
    # (<= 20): 2·u·2.2·20 -> 5e-6
    np.testing.assert_allclose(base(_x()), original, atol=1e-5)
    np.testing.assert_allclose(lora(_x()), unmerged, atol=1e-5)


def test_merge_into_factorized_base_keeps_it_factorized():
    base = FactorizedDense(16, 24, rank=3, rngs=nnx.Rngs(0))
    lora = _trained(LoRA(base, rank=2, rngs=nnx.Rngs(1)))
    lora.merge()
    assert base.rank == 5
    lora.unmerge()
    assert base.rank == 3


@pytest.mark.parametrize(
    ("alpha", "rslora", "scale"), [(None, False, 1.0), (8.0, False, 2.0), (8.0, True, 4.0)]
)
def test_scale(alpha, rslora, scale):
    base = nnx.Linear(16, 24, rngs=nnx.Rngs(0))
    lora = _trained(LoRA(base, rank=4, alpha=alpha, rslora=rslora, rngs=nnx.Rngs(1)))
    assert lora.scale == scale
    x = _x()
    expected = base(x) + scale * (x @ lora.lora_a[...] @ lora.lora_b[...])
    # the same float32 dots (bitwise here); in another order 2·20·u·Σ|x||s·A·B| (<= 66)
    # -> 1.6e-4 (a wrong scale is off by ~10)
    np.testing.assert_allclose(lora(x), expected, atol=2e-4)


def test_dropout_only_in_training_and_only_on_lora_path():
    lora = _trained(
        LoRA(nnx.Linear(16, 24, rngs=nnx.Rngs(0)), rank=2, dropout=0.5, rngs=nnx.Rngs(1))
    )
    x = _x()
    train_out = lora(x)
    lora.eval()
    eval_out = lora(x)
    expected = lora.base(x) + x @ lora.lora_a[...] @ lora.lora_b[...]
    np.testing.assert_allclose(eval_out, expected, atol=1e-4)  # as test_scale's, Σ <= 20
    assert np.abs(np.asarray(train_out - eval_out)).max() > 1e-3
    lora.lora_b[...] = jnp.zeros_like(lora.lora_b[...])
    lora.train()
    np.testing.assert_array_equal(lora(x), lora.base(x))  # base path never dropped


def test_logical_axes_follow_base():
    base = nnx.Linear(
        16,
        24,
        kernel_metadata={"out_sharding": ("embed", "mlp"), "eager_sharding": False},
        rngs=nnx.Rngs(0),
    )
    spec = nnx.get_partition_spec(nnx.state(LoRA(base, rank=2, rngs=nnx.Rngs(1))))
    assert tuple(spec["lora_a"].get_value()) == ("embed", "rank")
    assert tuple(spec["lora_b"].get_value()) == ("rank", "mlp")


@pytest.mark.parametrize("rank", [0, 17])
def test_bad_rank(rank):
    with pytest.raises(ValueError, match=r"\[1, 16\]"):
        LoRA(nnx.Linear(16, 24, rngs=nnx.Rngs(0)), rank=rank, rngs=nnx.Rngs(1))


def test_bad_dropout():
    with pytest.raises(ValueError, match=r"^dropout: must be a rate in \[0, 1\)"):
        LoRA(nnx.Linear(16, 24, rngs=nnx.Rngs(0)), rank=2, dropout=1.0, rngs=nnx.Rngs(1))


def test_macs_per_token():
    lora = LoRA(nnx.Linear(16, 24, rngs=nnx.Rngs(0)), rank=2, rngs=nnx.Rngs(1))
    assert macs_per_token(lora) == 16 * 24 + 2 * (16 + 24)
    lora.merge()
    assert macs_per_token(lora) == 16 * 24


def test_merge_needs_a_kernel_it_can_fold_into():
    class Opaque(nnx.Module):  # a linear map with no kernel attribute
        in_features, out_features = 16, 24

        def __call__(self, x):
            return jnp.zeros((*x.shape[:-1], 24))

    lora = _trained(LoRA(Opaque(), rank=2, rngs=nnx.Rngs(1)))
    with pytest.raises(TypeError, match=r"cannot merge into a Opaque: .* \[16, 24\] kernel"):
        lora.merge()
    assert not lora.merged


def _dora_reference(lora, x):
    """DoRA from its definition: x · m ⊙ (W + s·A·B) / ‖W + s·A·B‖ (+ bias), per column."""
    weight = np.asarray(lora.base_weight(), np.float64)
    adapted = weight + lora.scale * np.asarray(lora.lora_a[...] @ lora.lora_b[...], np.float64)
    direction = adapted / np.linalg.norm(adapted, axis=0)
    y = np.asarray(x, np.float64) @ (direction * np.asarray(lora.magnitude[...], np.float64))
    bias = getattr(lora.base, "bias", None)
    return y if bias is None else y + np.asarray(bias[...])


@pytest.mark.parametrize("kind", BASES)
def test_dora_is_its_definition_equals_base_at_init_and_merges(kind):
    base = BASES[kind]()
    original = np.asarray(base(_x()))
    lora = LoRA(base, rank=2, alpha=4.0, variant="dora", rngs=nnx.Rngs(1))
    assert isinstance(lora.magnitude, nnx.LoRAParam) and lora.magnitude.shape == (24,)
    # m = ‖W‖: W' = W, m/‖W‖ = 1 from the same float32 norm (bitwise here); off by a few
    # roundings it would move y by ~4·u·Σ|x||W| (<= 8.4) = 2e-6
    np.testing.assert_allclose(lora(_x()), original, atol=1e-5)
    _trained(lora)
    lora.magnitude[...] = lora.magnitude[...] * jnp.linspace(0.5, 1.5, 24)  # a trained m
    unmerged = np.asarray(lora(_x()))
    # float32 against float64: x·W (19 terms, Σ <= 8.4), ratio·s·(x·A)·B (18, Σ <= 16 × 1.25)
    # and m/‖W'‖ (~10 roundings of |out| <= 25): 19·u·8.4 + 18·u·20 + 10·u·25 -> 4e-5
    np.testing.assert_allclose(unmerged, _dora_reference(lora, _x()), atol=1e-4)
    assert np.abs(unmerged - original).max() > 1e-2
    lora.merge()
    # the merged x·W' (21 terms, Σ|x||W'| <= 12.4, W' rounded ~12 times) adds ~ 5e-5 more
    np.testing.assert_allclose(base(_x()), unmerged, atol=1e-4)  # folded into the base
    lora.unmerge()
    # W'/ratio - s·A·B: ~15 roundings of |W| + |s·A·B| against Σ|x|: 15·u·24.6 -> 2e-5,
    # and the same again through ‖W + s·A·B‖ in the DoRA forward
    np.testing.assert_allclose(base(_x()), original, atol=1e-4)
    np.testing.assert_allclose(lora(_x()), unmerged, atol=1e-4)


def test_dora_norm_takes_no_gradient_and_magnitude_trains():
    lora = _trained(LoRA(BASES["dense"](), rank=2, variant="dora", rngs=nnx.Rngs(1)))

    def loss(lora):
        return jnp.sum(lora(_x()) ** 2)

    grads = nnx.grad(loss, argnums=nnx.DiffState(0, nnx.LoRAParam))(lora)
    assert float(jnp.abs(grads["magnitude"][...]).sum()) > 0
    # the norm is a constant (the paper's Section 4.3): B's gradient is that of
    # x·A·B scaled by m/‖W + s·A·B‖, with no term through the norm
    weight = lora.base_weight()
    ratio = lora.magnitude[...] / jnp.linalg.norm(weight + lora.delta(), axis=0)
    y = lora(_x())
    h = _x() @ lora.lora_a[...]
    expected = lora.scale * jnp.einsum("bnr,bno->ro", h, 2 * y * ratio)
    # float32 contractions over 16 tokens on both sides, Σ|terms| <= 23: 2·16·u·23 -> 4e-5
    # (a gradient through the norm would change it by O(1))
    np.testing.assert_allclose(grads["lora_b"][...], expected, atol=1e-4)


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_keep_the_function_and_split_w(init):
    base = BASES["dense"]()
    w = np.asarray(base.kernel[...], np.float64)
    original = np.asarray(base(_x()))
    lora = LoRA(base, rank=4, alpha=8.0, init=init, rngs=nnx.Rngs(1))
    residual = np.asarray(base.kernel[...], np.float64)
    top = lora.scale * np.asarray(lora.lora_a[...] @ lora.lora_b[...], np.float64)
    # float64 split stored in float32: W_res rounded once (|W_res| <= 0.7), A, B once each
    # and a float32 K=4 product: u·0.7 + 6·u·|s·A·B| (<= 1.3) -> 5e-7
    np.testing.assert_allclose(residual + top, w, atol=1e-6)  # W_res + s·A·B == W
    # x·W_res (16 terms, Σ <= 6) + s·(x·A)·B (20, Σ <= 9.6) against x·W (16, Σ <= 5.4), and
    # the split's 5e-7 against Σ|x| <= 20: u·(96 + 192 + 86) + 1e-5 -> 3e-5
    np.testing.assert_allclose(lora(_x()), original, atol=5e-5)
    if init == "pissa":  # s·A·B is W's best rank-4 approximation
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        # the same float64 SVD, then float32 A, B and their K=4 product: 6·2^-24·0.7 = 3e-7
        np.testing.assert_allclose(top, (u[:, :4] * s[:4]) @ vt[:4], atol=1e-6)
    else:  # OLoRA: A·B spans the first 4 columns of Q in Wᵀ = Q·R
        q, _ = np.linalg.qr(w.T)
        b = np.asarray(lora.lora_b[...], np.float64)
        # the same float64 QR; B rounded to float32: 2^-24·‖b_i‖·‖q_j‖ = 6e-8
        np.testing.assert_allclose(np.abs(b @ q[:, :4]), np.eye(4), atol=1e-6)
    _trained(lora)
    trained = np.asarray(lora(_x()))
    lora.merge()
    # trained Σ|x||s·A·B| <= 66: merged 17·u·72 and unmerged 20·u·66 -> 1.5e-4
    np.testing.assert_allclose(base(_x()), trained, atol=2e-4)
    lora.unmerge()
    # (W_res + s·A·B) - s·A·B, two roundings of |W_res| + |s·A·B| <= 10.2 -> 1.2e-6
    np.testing.assert_allclose(np.asarray(base.kernel[...]), residual, atol=2e-6)


def test_pissa_needs_a_dense_base_and_bad_names_fail():
    with pytest.raises(ValueError, match=r"^init: must be 'default' for a FactorizedDense base"):
        LoRA(BASES["factorized"](), rank=2, init="pissa", rngs=nnx.Rngs(1))
    with pytest.raises(ValueError, match=r"^variant: must be one of lora, dora"):
        LoRA(BASES["dense"](), rank=2, variant="vera", rngs=nnx.Rngs(1))


def test_merge_computes_in_float32_for_bfloat16_parameters():
    base = nnx.Linear(16, 24, param_dtype=jnp.bfloat16, dtype=jnp.float32, rngs=nnx.Rngs(0))
    lora = _trained(LoRA(base, rank=2, alpha=4.0, variant="dora", rngs=nnx.Rngs(1)))
    w = np.asarray(base.kernel[...], np.float64)
    a, b = (np.asarray(v[...], np.float64) for v in (lora.lora_a, lora.lora_b))
    adapted = w + lora.scale * a @ b
    expected = (
        adapted / np.linalg.norm(adapted, axis=0) * np.asarray(lora.magnitude[...], np.float64)
    )
    lora.merge()
    merged = np.asarray(base.kernel[...].astype(jnp.float32), np.float64)
    # one bfloat16 rounding of the float32 result, nothing more: bfloat16's unit roundoff
    # 2^-8 (relative); atol covers the float32 merge itself, ~10·u·|W'| (<= 0.8) = 5e-7
    np.testing.assert_allclose(merged, expected, rtol=2**-8, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_the_low_rank_products_gradients_are_autodiffs(dtype):
    from lowrank_jax.layers.lora import low_rank_product

    keys = jax.random.split(jax.random.key(0), 4)
    h = jax.random.normal(keys[0], (3, 5, 16), dtype)
    a = jax.random.normal(keys[1], (16, 4), dtype)
    b = jax.random.normal(keys[2], (4, 24), dtype)
    g = jax.random.normal(keys[3], (3, 5, 24), dtype)

    def plain(h, a, b):
        return 0.5 * jnp.dot(jnp.dot(h, a), b)

    def loss(fn):
        return lambda h, a, b: jnp.sum(fn(h, a, b).astype(jnp.float32) * g)

    ours = jax.jit(jax.grad(loss(lambda h, a, b: low_rank_product(h, a, b, 0.5)), (0, 1, 2)))
    # The same dots as autodiff's and an exact scale (0.5): bitwise equal here. float32:
    # another accumulation order moves a sum of K <= 39 terms by ~√K·u·Σ|terms| (<= 10x the
    # max for Gaussians) -> 4e-6 of the max; bfloat16: one or two roundings of each
    # output, 2^-8 each, as in XLA's f32-accumulated bf16 dots -> 2e-2 of the max.
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(
        np.asarray(low_rank_product(h, a, b, 0.5), np.float32),
        np.asarray(plain(h, a, b), np.float32), rtol=tol, atol=tol,
    )  # fmt: skip
    for mine, theirs in zip(ours(h, a, b), jax.grad(loss(plain), (0, 1, 2))(h, a, b), strict=True):
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
        scale = float(jnp.abs(theirs.astype(jnp.float32)).max())
        np.testing.assert_allclose(
            np.asarray(mine, np.float32), np.asarray(theirs, np.float32), atol=tol * scale
        )
