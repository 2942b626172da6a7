import itertools

import numpy as np
import pytest

from lowrank_jax import ranks
from lowrank_jax.config import ConfigError


def _brute_force(spectra, shapes, budget):
    """The exact optimum: every rank combination that fits, the least total error."""
    costs = [i + o for i, o in shapes]
    best = None
    # float64 sums of <= 18 squares (Σ <~ 10) differ by <= 18·1.1e-16·10 = 2e-14 between
    # orders: 1e-12 separates a real improvement from rounding (also below)
    for combo in itertools.product(*(range(1, min(s) + 1) for s in shapes)):
        if sum(c * r for c, r in zip(costs, combo, strict=True)) <= budget:
            error = ranks.total_error(spectra, combo)
            if best is None or error < best[0] - 1e-12:
                best = (error, list(combo))
    return best


def _spectra(rng, shapes):
    # decaying spectra of different steepness, sorted descending as an SVD returns them
    return [
        np.sort(
            rng.gamma(0.5, 1.0, min(shape)) * np.exp(-rng.uniform(0, 1) * np.arange(min(shape)))
        )[::-1]
        for shape in shapes
    ]


@pytest.mark.parametrize("seed", range(6))
def test_greedy_equals_brute_force_when_layers_cost_the_same(seed):
    rng = np.random.default_rng(seed)
    shapes = [(6, 6)] * 3
    spectra = _spectra(rng, shapes)
    for budget in (36, 60, 96, 150):
        got = ranks.allocate(spectra, shapes, budget, "greedy")
        error, _ = _brute_force(spectra, shapes, budget)
        assert ranks.total_error(spectra, got) == pytest.approx(error, rel=1e-12, abs=1e-15)
        assert sum(12 * r for r in got) <= budget


@pytest.mark.parametrize("seed", range(6))
def test_greedy_is_never_worse_than_uniform_and_near_the_optimum(seed):
    rng = np.random.default_rng(100 + seed)
    shapes = [(4, 8), (8, 8), (3, 9)]  # unequal costs per rank: 12, 16, 12
    spectra = _spectra(rng, shapes)
    costs = [i + o for i, o in shapes]
    for budget in (40, 64, 90, 120):
        got = ranks.allocate(spectra, shapes, budget, "greedy")
        even = ranks.allocate(spectra, shapes, budget, "uniform")
        assert sum(c * r for c, r in zip(costs, got, strict=True)) <= budget
        assert ranks.total_error(spectra, got) <= ranks.total_error(spectra, even)
        optimum, _ = _brute_force(spectra, shapes, budget)
        assert ranks.total_error(spectra, got) >= optimum - 1e-12
        # optimal up to the remainder it could not spend: no worse than the exact optimum
        # of a budget smaller by one step of the dearest layer
        tighter = _brute_force(spectra, shapes, budget - max(costs) + 1)
        if tighter is not None:
            assert ranks.total_error(spectra, got) <= tighter[0] + 1e-12


def test_truncation_error_is_the_dropped_frobenius_norm():
    w = np.random.default_rng(0).normal(size=(7, 5))
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    for r in (1, 3, 5):
        truncated = (u[:, :r] * s[:r]) @ vt[:r]
        # float64: residual entries off by ~r·1.1e-16·|W| (<~ 1e-15), their squared sum by
        # <~ 1e-13 relative when it is >~ 0.1; rel 1e-12 (abs 1e-12: at r = 5 both are ~0)
        assert ranks.truncation_error(s, r) == pytest.approx(
            np.sum((w - truncated) ** 2), rel=1e-12, abs=1e-12
        )


def test_uniform_is_the_largest_single_rank_that_fits():
    assert ranks.uniform([16, 16], [8, 8], 64) == [2, 2]
    assert ranks.uniform([16, 16], [8, 8], 63) == [1, 1]
    assert ranks.uniform([16, 12], [8, 3], 16 * 8 + 12 * 3) == [8, 3]  # capped at min(in, out)


def test_budgets_fractions_counts_and_errors():
    shapes = [(8, 8), (8, 8)]
    spectra = [np.ones(8), np.ones(8)]
    assert ranks.budget_parameters(0.5, [64, 64]) == 64
    assert ranks.budget_parameters(100, [64, 64]) == 100
    with pytest.raises(ConfigError, match=r"^budget: must be a fraction in \(0, 1\]"):
        ranks.allocate(spectra, shapes, 1.5)
    with pytest.raises(ConfigError, match=r"^budget: must be at least 32 parameters"):
        ranks.allocate(spectra, shapes, 31)
    with pytest.raises(ConfigError, match=r"^allocation: must be one of uniform, greedy"):
        ranks.allocate(spectra, shapes, 64, "best")


def _two_layers():
    """x -> L0 -> L1 with L0's kernel of rank 2: L1's inputs span 2 directions, L0's all 8."""
    import jax.numpy as jnp
    from flax import nnx

    model = nnx.Sequential(nnx.Linear(8, 8, rngs=nnx.Rngs(0)), nnx.Linear(8, 8, rngs=nnx.Rngs(1)))
    rng = np.random.default_rng(0)
    model.layers[0].kernel[...] = jnp.asarray(rng.normal(size=(8, 2)) @ rng.normal(size=(2, 8)))
    model.layers[0].bias[...] = jnp.zeros(8)
    batches = [(jnp.asarray(rng.normal(size=(64, 8)), jnp.float32),) for _ in range(4)]
    return model, batches


def test_lora_budget_by_input_spectra_goes_where_the_inputs_vary():
    """EVA's rule: L1 sees 2 directions, so a greedy budget of 8 ranks gives it 2 and L0 6."""
    from flax import nnx

    from lowrank_jax import surgery

    model, batches = _two_layers()
    budget = 8 * 16  # eight ranks of an 8 x 8 layer (in + out = 16 parameters each)
    surgery.apply_lora(
        model,
        r"layers\.\d",
        budget=budget,
        allocation="greedy",
        calibration=batches,
        rngs=nnx.Rngs(2),
    )
    assert surgery.ranks(model) == {"layers.0": 6, "layers.1": 2}
    assert surgery.count_params(model)["lora"] == budget
    uniform, _ = _two_layers()
    surgery.apply_lora(uniform, r"layers\.\d", budget=budget, rngs=nnx.Rngs(2))
    assert surgery.ranks(uniform) == {"layers.0": 4, "layers.1": 4}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rank": 2, "budget": 64}, r"^budget: must be given with targets alone"),
        ({"budget": 64, "allocation": "greedy"}, r"^calibration: must be batches for allocation"),
        ({"budget": 8}, r"^budget: must be at least 32 parameters \(rank 1 in each of the 2"),
    ],
)
def test_lora_budget_errors_name_the_field(kwargs, message):
    from flax import nnx

    from lowrank_jax import surgery

    model, _ = _two_layers()
    with pytest.raises(ConfigError, match=message):
        surgery.apply_lora(model, r"layers\.\d", rngs=nnx.Rngs(2), **kwargs)
    assert not surgery.count_params(model)["lora"]
