import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lowrank_jax.layers import FactorizedDense, macs_per_token, rank_for_energy

# Bounds below: u = 2^-24, float32's unit roundoff; a float32 sum of n products is off by
# at most n·u·Σ|terms| (Higham's γ_n), so two orders of it differ by at most twice that.


def _with_spectrum(s, rows, cols, seed=0):
    """A [rows, cols] matrix whose singular values are exactly ``s``."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(rows, len(s))))
    v, _ = np.linalg.qr(rng.normal(size=(cols, len(s))))
    return ((u * np.asarray(s)) @ v.T).astype(np.float32)


def test_shapes_and_bias():
    layer = FactorizedDense(16, 24, rank=2, rngs=nnx.Rngs(0))
    assert layer.a.shape == (16, 2) and layer.b.shape == (2, 24) and layer.bias.shape == (24,)
    assert layer(jnp.ones((2, 8, 16))).shape == (2, 8, 24)
    assert FactorizedDense(16, 24, rank=2, use_bias=False, rngs=nnx.Rngs(0)).bias is None


def test_forward_is_x_a_b_plus_bias():
    layer = FactorizedDense(16, 24, rank=3, rngs=nnx.Rngs(0))
    layer.bias[...] = jnp.arange(24.0)
    x = jax.random.normal(jax.random.key(1), (4, 16))
    expected = x @ np.asarray(layer.a[...]) @ np.asarray(layer.b[...]) + np.arange(24.0)
    # the same float32 ops on both sides; were they ordered differently: 2 × 19 terms ×
    # u × Σ|x||A||B| ≈ 11 -> 2.5e-6, plus a rounding of |y| <= 24 (rtol)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rank", [1, 8, 64])
def test_init_output_variance_matches_dense(rank):
    x = jax.random.normal(jax.random.key(0), (1024, 512))
    dense_var = float(jnp.var(nnx.Linear(512, 512, rngs=nnx.Rngs(1))(x)))
    factorized_var = float(jnp.var(FactorizedDense(512, 512, rank, rngs=nnx.Rngs(2))(x)))
    # sampling, not rounding: one draw of W (512² entries) puts the dense variance within
    # ~0.5% of 1; at rank 1, ‖a‖² and ‖b‖²/512 (±6% each) and the variance of 1024 values
    # of x·a (±4%) give a ~10% spread, so 0.2 is 2σ; a wrong 1/R scale is off by ≥ 8x
    assert dense_var == pytest.approx(1.0, rel=0.1)
    assert factorized_var == pytest.approx(dense_var, rel=0.2)


def test_from_dense_reproduces_exact_rank_r_matrix():
    kernel = _with_spectrum([3.0, 2.0, 1.0], 24, 40)
    bias = np.linspace(-1, 1, 40).astype(np.float32)
    layer = FactorizedDense.from_dense(kernel, bias, rank=3)
    assert layer.rank == 3
    # float32 A, B (one rounding each) and their K=3 product: 5·u·Σ|A||B| (≈ 0.5) -> 1.5e-7
    np.testing.assert_allclose(layer.dense_kernel(), kernel, atol=1e-6)
    x = np.random.default_rng(1).normal(size=(5, 24)).astype(np.float32)
    # (x·A)·B: (24+3+2)·u·Σ|x||A||B| (≈ 4.7) -> 8e-6; x·W: 24·u·Σ|x||W| (≈ 3.8) -> 5e-6
    np.testing.assert_allclose(layer(x), x @ kernel + bias, atol=2e-5)


@pytest.mark.parametrize("rank", [1, 4, 10])
def test_from_dense_is_best_rank_r_approximation(rank):
    kernel = np.random.default_rng(0).normal(size=(20, 30)).astype(np.float32)
    s = np.linalg.svd(kernel.astype(np.float64), compute_uv=False)
    approx = np.asarray(FactorizedDense.from_dense(kernel, rank=rank).dense_kernel(), np.float64)
    residual = kernel - approx
    # Eckart–Young: Frobenius error² = sum of the dropped s², spectral error = s[R].
    # float32 A·B is off by δ, ‖δ‖_F <= (R+2)·u·‖W‖_F (≈ 24) <= 2e-5, so ‖residual‖ moves
    # by <= ‖δ‖: relative 2‖δ‖/‖residual‖ (>= 10) = 4e-6 squared, ‖δ‖/s[R] (>= 4.5) = 4e-6
    assert np.sum(residual**2) == pytest.approx(np.sum(s[rank:] ** 2), rel=1e-5)
    assert np.linalg.norm(residual, 2) == pytest.approx(s[rank], rel=1e-5)


@pytest.mark.parametrize(
    ("energy", "rank"), [(0.5, 1), (64 / 85, 1), (0.76, 2), (0.95, 3), (1.0, 4)]
)
def test_energy_picks_smallest_rank(energy, rank):
    # s² = 64, 16, 4, 1 (total 85): cumulative fractions .753, .941, .988, 1.
    kernel = _with_spectrum([8.0, 4.0, 2.0, 1.0], 12, 10)
    assert FactorizedDense.from_dense(kernel, energy=energy).rank == rank
    assert rank_for_energy(np.array([8.0, 4.0, 2.0, 1.0]), energy) == rank


@pytest.mark.parametrize("rank", [0, -1, 17, 2.0, True])
def test_bad_rank_names_valid_range(rank):
    with pytest.raises(
        ValueError,
        match=r"^rank: must be an integer in \[1, 16\] "
        r"\(min\(in_features, out_features\) for a 16x24 layer\)",
    ):
        FactorizedDense(16, 24, rank, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\[1, 16\]"):
        FactorizedDense.from_dense(np.ones((16, 24), np.float32), rank=rank)


def test_rank_and_energy_exactly_one():
    kernel = np.ones((8, 8), np.float32)
    for kwargs in ({}, {"rank": 2, "energy": 0.9}):
        with pytest.raises(ValueError, match=r"exactly one of rank .*\[1, 8\].* and energy"):
            FactorizedDense.from_dense(kernel, **kwargs)
    for energy in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"energy must be in \(0, 1\]"):
            FactorizedDense.from_dense(kernel, energy=energy)


def test_macs_per_token():
    assert macs_per_token(FactorizedDense(16, 24, rank=2, rngs=nnx.Rngs(0))) == 2 * (16 + 24)


def test_logical_axes_on_factors():
    layer = FactorizedDense(16, 24, rank=2, kernel_axes=("embed", "mlp"), rngs=nnx.Rngs(0))
    spec = nnx.get_partition_spec(nnx.state(layer))
    assert tuple(spec["a"].get_value()) == ("embed", "rank")
    assert tuple(spec["b"].get_value()) == ("rank", "mlp")
    assert tuple(spec["bias"].get_value()) == ("mlp",)


def test_bf16_compute():
    layer = FactorizedDense(16, 24, rank=2, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert layer(jnp.ones((2, 16))).dtype == jnp.bfloat16
    assert layer.a.dtype == jnp.float32


def test_spectral_init_is_the_dense_inits_best_rank_r_balanced():
    layer = FactorizedDense(32, 48, rank=4, init="spectral", rngs=nnx.Rngs(3))
    a, b = np.asarray(layer.a[...], np.float64), np.asarray(layer.b[...], np.float64)
    dense = np.asarray(nnx.initializers.lecun_normal()(nnx.Rngs(3).params(), (32, 48)), np.float64)
    u, s, vt = np.linalg.svd(dense, full_matrices=False)
    # A float32 SVD is the exact one of W + E, ‖E‖ <~ eps·‖W‖_F (backward stable). Weyl moves
    # each s by <= ‖E‖; Wedin turns the top-4 subspaces by <= ‖E‖/gap, gap = s[3] - s[4]
    # (0.012 here, s[0] = 2.2), so the rank-4 truncation moves by <= ‖E‖·(1 + 2·s[0]/gap).
    backward = np.finfo(np.float32).eps * np.linalg.norm(dense)  # ≈ 8e-7
    truncation = backward * (1 + 2 * s[0] / (s[3] - s[4]))  # ≈ 3e-4
    np.testing.assert_allclose(a @ b, (u[:, :4] * s[:4]) @ vt[:4], atol=truncation)
    # balanced: AᵀA = √s·UᵀU·√s; Weyl's ‖E‖ plus s[0]·‖UᵀU - I‖ (<~ 32·eps, Householder)
    balance = backward + s[0] * 32 * np.finfo(np.float32).eps  # ≈ 9e-6
    np.testing.assert_allclose(a.T @ a, np.diag(s[:4]), atol=balance)
    np.testing.assert_allclose(b @ b.T, np.diag(s[:4]), atol=balance)


def test_frobenius_penalty_is_half_lambda_product_norm():
    layer = FactorizedDense(16, 24, rank=3, frobenius_decay=0.2, rngs=nnx.Rngs(0))
    product = np.asarray(layer.a[...], np.float64) @ np.asarray(layer.b[...], np.float64)
    # float32 Gram products AᵀA, BBᵀ (16, 24 terms) then 9: a sum of positive-ish terms,
    # relative <~ 40·u = 2.4e-6 (rel=1e-5)
    assert float(layer.penalty()) == pytest.approx(0.1 * np.sum(product**2), rel=1e-5)
    grad = nnx.grad(lambda m: m.penalty())(layer)  # d/dA λ/2‖AB‖² = λ·(AB)·Bᵀ
    # autodiff through the same Grams: <~ 60·u·Σ|terms| (≈ 1.5, as max|grad|) -> 5e-6
    np.testing.assert_allclose(
        grad.a[...], 0.2 * product @ np.asarray(layer.b[...]).T, rtol=0, atol=1e-5
    )


@pytest.mark.parametrize(
    ("init", "decay", "message"),
    [
        ("svd", 0.0, r"^init: must be one of default, spectral, got 'svd'"),
        ("default", -1.0, r"^frobenius_decay: must be a finite number >= 0, got -1.0"),
    ],
)
def test_bad_init_or_decay_names_the_field(init, decay, message):
    with pytest.raises(ValueError, match=message):
        FactorizedDense(8, 8, rank=2, init=init, frobenius_decay=decay, rngs=nnx.Rngs(0))
