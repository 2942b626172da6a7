import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lowrank_jax.layers import Adapter, FactorizedDense, LoRA, WithAdapter
from lowrank_jax.surgery import (
    add_adapters,
    apply_lora,
    count_params,
    factorize,
    merge_drift,
    merge_lora,
    ranks,
    trainable_filter,
)

D = 16
QV = r"layers\.\d+\.attention\.(query|value)"


class Attention(nnx.Module):
    def __init__(self, rngs):
        self.query, self.key, self.value, self.out = (nnx.Linear(D, D, rngs=rngs) for _ in range(4))

    def __call__(self, x):  # a toy mixing, enough to route gradients through all four
        q, k, v = self.query(x), self.key(x), self.value(x)
        weights = jax.nn.softmax(jnp.einsum("bnd,bmd->bnm", q, k) / np.sqrt(D))
        return self.out(jnp.einsum("bnm,bmd->bnd", weights, v))


class Block(nnx.Module):
    def __init__(self, rngs):
        self.attention = Attention(rngs)
        self.ffn_in = nnx.Linear(D, 2 * D, rngs=rngs)
        self.ffn_out = nnx.Linear(2 * D, D, rngs=rngs)

    def __call__(self, x):
        x = x + self.attention(x)
        return x + self.ffn_out(nnx.gelu(self.ffn_in(x)))


class Toy(nnx.Module):
    def __init__(self, rngs):
        self.layers = nnx.List([Block(rngs) for _ in range(2)])
        self.head = nnx.Linear(D, 3, rngs=rngs)

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(x.mean(axis=1))


# Hand counts: Linear(16,16) = 272; block = 4*272 + (16*32+32) + (32*16+16) = 2160;
# head = 16*3+3 = 51; LoRA rank 2 on a 16x16 = 2*(16+16) = 64; adapter(16, 4) = 148.
TOTAL = 2 * 2160 + 51


def _x():
    return jax.random.normal(jax.random.key(0), (2, 8, D))


def test_count_params_plain_model():
    assert count_params(Toy(nnx.Rngs(0))) == {"total": TOTAL, "trainable": TOTAL, "lora": 0}


def test_apply_lora_selects_targets_and_keeps_outputs():
    model = Toy(nnx.Rngs(0))
    before = model(_x())
    model = apply_lora(model, QV, rank=2, rngs=nnx.Rngs(1))
    for block in model.layers:
        assert isinstance(block.attention.query, LoRA) and isinstance(block.attention.value, LoRA)
        assert isinstance(block.attention.key, nnx.Linear) and isinstance(block.ffn_in, nnx.Linear)
    np.testing.assert_array_equal(model(_x()), before)
    assert count_params(model) == {"total": TOTAL + 4 * 64, "trainable": 4 * 64, "lora": 4 * 64}
    assert count_params(model, "all")["trainable"] == TOTAL + 4 * 64
    assert count_params(model, r".*lora_[ab]|head\..*")["trainable"] == 4 * 64 + 51


def test_gradient_step_changes_only_lora_params():
    model = apply_lora(Toy(nnx.Rngs(0)), QV, rank=2, rngs=nnx.Rngs(1))
    wrt = trainable_filter(model)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=wrt)
    labels = jnp.array([0, 2])

    @nnx.jit
    def step(model, optimizer, x):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), labels).mean()

        grads = nnx.grad(loss_fn, argnums=nnx.DiffState(0, wrt))(model)
        optimizer.update(model, grads)

    frozen = jax.tree.map(np.array, nnx.state(model, nnx.Not(nnx.LoRAParam)))
    lora = jax.tree.map(np.array, nnx.state(model, nnx.LoRAParam))
    for _ in range(2):  # A's gradient is zero while B is zero: two steps move both
        step(model, optimizer, _x())
    jax.tree.map(np.testing.assert_array_equal, frozen, nnx.state(model, nnx.Not(nnx.LoRAParam)))
    changed = jax.tree.leaves(
        jax.tree.map(lambda a, b: bool(np.any(a != b)), lora, nnx.state(model, nnx.LoRAParam))
    )
    assert len(changed) == 8 and all(changed)


def test_unmatched_targets_list_the_paths():
    with pytest.raises(ValueError) as error:
        apply_lora(Toy(nnx.Rngs(0)), r"encoder\.query", rank=2, rngs=nnx.Rngs(1))
    message = str(error.value)
    assert message.startswith("targets: must be a pattern matching some of the dense layers here")
    assert "layers.0.attention.query" in message and "head" in message


def test_bad_regex_is_a_value_error():
    with pytest.raises(ValueError, match=r"^targets: must be a valid regular expression"):
        apply_lora(Toy(nnx.Rngs(0)), "layers.(", rank=2, rngs=nnx.Rngs(1))


@pytest.mark.parametrize("again", [QV, r".*query.*", r"layers\.0\.attention\.query\.base"])
def test_lora_twice_is_an_error(again):
    model = apply_lora(Toy(nnx.Rngs(0)), QV, rank=2, rngs=nnx.Rngs(1))
    with pytest.raises(ValueError, match=r"layers\.0\.attention\.query already has LoRA"):
        apply_lora(model, again, rank=2, rngs=nnx.Rngs(2))


def test_lora_bad_rank_raises_before_changing_anything():
    model = Toy(nnx.Rngs(0))
    # rank 4 fits the 16x16 query but not the 16x3 head: nothing may change
    with pytest.raises(ValueError, match=r"^head\.rank: must be an integer in \[1, 3\]"):
        apply_lora(model, QV + "|head", rank=4, rngs=nnx.Rngs(1))
    assert count_params(model)["lora"] == 0
    assert isinstance(model.layers[0].attention.query, nnx.Linear)


def test_merge_lora_restores_plain_layers_with_same_function():
    model = apply_lora(Toy(nnx.Rngs(0)), QV, rank=2, alpha=4.0, rngs=nnx.Rngs(1))
    for block in model.layers:
        block.attention.query.lora_b[...] = jnp.full((2, D), 0.1)
    trained = model(_x())
    model = merge_lora(model)
    assert all(isinstance(b.attention.query, nnx.Linear) for b in model.layers)
    assert count_params(model) == {"total": TOTAL, "trainable": TOTAL, "lora": 0}
    # only W_q, W_v change: x·W' against x·W + s·(x·A)·B, 2·20·u·Σ|x|(|W| + |s·A·B|) (<= 6.4)
    # = 1.5e-5 per layer (u = 2^-24), carried on with gain ~1 -> 3e-5
    np.testing.assert_allclose(model(_x()), trained, atol=5e-5)


def test_factorize_full_rank_is_exact_and_low_rank_saves_params():
    model = Toy(nnx.Rngs(0))
    before = model(_x())
    factorize(model, r"layers\.\d+\.ffn_(in|out)", rank=D)
    assert all(isinstance(b.ffn_in, FactorizedDense) for b in model.layers)
    # float32 A, B of a float64 SVD and (x·A)·B (16 + 16 terms) against x·W: ~2·34·u·Σ|x||A||B|
    # (<= 12) = 5e-5 per FFN dense, 4 of them with gain ~1 -> 2e-4; a wrong rank is O(0.1)
    np.testing.assert_allclose(model(_x()), before, atol=2e-4)

    small = factorize(Toy(nnx.Rngs(0)), r"layers\.\d+\.ffn_(in|out)", rank=2)
    # each FFN dense: 16*32 kernel -> 2*(16+32) factors
    assert count_params(small)["total"] == TOTAL - 4 * (16 * 32 - 2 * 48)


def test_factorize_by_energy_gives_each_layer_its_rank():
    """Each layer: the smallest R whose top R squared singular values keep 90% of the sum."""
    model = Toy(nnx.Rngs(0))
    names = ("query", "key", "value", "out")
    # kernels with a decaying spectrum, one per layer, so the rule picks different ranks
    rng = np.random.default_rng(0)
    expected = {}
    for i, block in enumerate(model.layers):
        for j, name in enumerate(names):
            u, _ = np.linalg.qr(rng.normal(size=(D, D)))
            v, _ = np.linalg.qr(rng.normal(size=(D, D)))
            s = np.exp(-np.arange(D) / (1.0 + i + 2 * j))
            getattr(block.attention, name).kernel[...] = jnp.asarray(u @ np.diag(s) @ v.T)
            energy = np.cumsum(s**2) / np.sum(s**2)
            expected[i, name] = int(np.argmax(energy >= 0.9)) + 1  # smallest R reaching 0.9
    factorize(model, r"layers\.\d+\.attention\.\w+", energy=0.9)
    ranks = {
        (i, name): getattr(block.attention, name).rank
        for i, block in enumerate(model.layers)
        for name in names
    }
    assert ranks == expected
    assert len(set(ranks.values())) > 3  # the layers did get ranks of their own


def _spectra_model(seed=0):
    """A Toy whose attention kernels have spectra of different steepness."""
    model = Toy(nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    for i, block in enumerate(model.layers):
        for j, name in enumerate(("query", "key", "value", "out")):
            u, _ = np.linalg.qr(rng.normal(size=(D, D)))
            v, _ = np.linalg.qr(rng.normal(size=(D, D)))
            s = np.exp(-np.arange(D) / (0.5 + 3 * ((i + j) % 3)))
            getattr(block.attention, name).kernel[...] = jnp.asarray(u @ np.diag(s) @ v.T)
    return model


def _weight_error(before, after, paths):
    """The total squared Frobenius error of the factorized kernels, measured."""
    total = 0.0
    for path in paths:
        i, name = path.split(".")[1], path.split(".")[-1]
        w = np.asarray(getattr(before.layers[int(i)].attention, name).kernel[...], np.float64)
        approx = getattr(after.layers[int(i)].attention, name).dense_kernel()
        total += float(np.sum((w - np.asarray(approx, np.float64)) ** 2))
    return total


def test_factorize_under_a_budget_greedy_beats_uniform_on_the_measured_error():
    targets = r"layers\.\d+\.attention\.\w+"
    original = _spectra_model()
    dense = sum(D * D for _ in ranks_of_layers(original))
    greedy = factorize(_spectra_model(), targets, budget=0.25, allocation="greedy")
    uniform = factorize(_spectra_model(), targets, budget=0.25, allocation="uniform")
    got, even = ranks(greedy), ranks(uniform)
    assert set(got) == set(even) == set(ranks_of_layers(original))
    assert len(set(even.values())) == 1 and len(set(got.values())) > 2  # one R; ranks of their own
    for chosen in (got, even):  # within the budget: a quarter of the layers' weights
        assert sum(r * 2 * D for r in chosen.values()) <= 0.25 * dense
    assert _weight_error(original, greedy, got) < 0.8 * _weight_error(original, uniform, even)
    with pytest.raises(ValueError, match=r"^rank: must be given alone"):
        factorize(_spectra_model(), targets, rank=2, budget=0.5)


def ranks_of_layers(model):
    return [
        f"layers.{i}.attention.{n}"
        for i in range(len(model.layers))
        for n in ("query", "key", "value", "out")
    ]


def test_factorize_inside_lora_is_an_error():
    model = apply_lora(Toy(nnx.Rngs(0)), QV, rank=2, rngs=nnx.Rngs(1))
    with pytest.raises(ValueError, match="already has LoRA"):
        factorize(model, r"layers\.0\.attention\.query(\.base)?", rank=2)


def test_lora_on_factorized_model_merges_exactly():
    model = factorize(Toy(nnx.Rngs(0)), QV, rank=4)
    apply_lora(model, QV, rank=2, rngs=nnx.Rngs(1))
    for block in model.layers:
        block.attention.value.lora_b[...] = jnp.full((2, D), 0.1)
    trained = model(_x())
    merge_lora(model)
    assert model.layers[0].attention.value.rank == 6
    # [A, A_l]·[B; B_l] sums the same 4 + 2 products in one dot (scale 1): 2·6·u·Σ|h||B'|
    # (<~ 5) = 4e-6 per layer, 2 layers -> 7e-6
    np.testing.assert_allclose(model(_x()), trained, atol=1e-5)


def test_add_adapters_identity_counts_and_errors():
    model = Toy(nnx.Rngs(0))
    before = model(_x())
    add_adapters(model, r"layers\.\d+\.(attention\.out|ffn_out)", bottleneck=4, rngs=nnx.Rngs(1))
    block = model.layers[0]
    assert isinstance(block.ffn_out, WithAdapter) and isinstance(block.ffn_out.adapter, Adapter)
    np.testing.assert_array_equal(model(_x()), before)
    assert count_params(model) == {"total": TOTAL + 4 * 148, "trainable": 4 * 148, "lora": 0}
    with pytest.raises(ValueError, match=r"layers\.0\.ffn_out already has an adapter"):
        add_adapters(model, r"layers\.0\.ffn_out", bottleneck=4, rngs=nnx.Rngs(2))
    with pytest.raises(ValueError, match=r"^head\.bottleneck: must be an integer in \[1, 3\]"):
        add_adapters(model, r"head", bottleneck=4, rngs=nnx.Rngs(2))  # head out = 3


def test_lora_base_is_never_a_target_of_its_own():
    model = apply_lora(Toy(nnx.Rngs(0)), QV, rank=2, rngs=nnx.Rngs(1))
    add_adapters(model, r".*query.*", bottleneck=4, rngs=nnx.Rngs(2))  # not query.base
    query = model.layers[0].attention.query
    assert isinstance(query, WithAdapter) and isinstance(query.layer.base, nnx.Linear)


def test_a_layer_named_base_is_still_a_target():
    class Model(nnx.Module):
        def __init__(self, rngs):
            self.base = nnx.Linear(D, D, rngs=rngs)

    model = apply_lora(Model(nnx.Rngs(0)), "base", rank=2, rngs=nnx.Rngs(1))
    assert isinstance(model.base, LoRA)


def test_trainable_filter_specs():
    model = add_adapters(
        apply_lora(Toy(nnx.Rngs(0)), QV, rank=2, rngs=nnx.Rngs(1)),
        r"layers\.0\.ffn_out",
        4,
        rngs=nnx.Rngs(2),
    )
    assert count_params(model, "lora")["trainable"] == 4 * 64
    assert count_params(model, "adapters")["trainable"] == 148
    assert count_params(model)["trainable"] == 4 * 64 + 148
    with pytest.raises(
        ValueError, match=r"^trainable: must be all, lora, adapters, auto or a regex"
    ):
        trainable_filter(model, "lora(")


def test_calibrated_factorize_reaches_the_optimal_output_error_on_its_inputs():
    # Anisotropic inputs: the directions a layer actually sees are what matters.
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    x = (rng.normal(size=(512, 32)) * np.logspace(0, -2, 32)) @ rotation
    x = x.astype(np.float32)

    def layer():
        return nnx.Sequential(nnx.Linear(32, 24, rngs=nnx.Rngs(0)))

    kernel = np.asarray(layer().layers[0].kernel[...], np.float64)
    plain = factorize(layer(), r"layers\.0", rank=4).layers[0].dense_kernel()
    calibrated = factorize(layer(), r"layers\.0", rank=4, calibration=[(x[:256],), (x[256:],)])
    calibrated = calibrated.layers[0].dense_kernel()

    def output_error(approx):
        return np.linalg.norm(x @ kernel - x @ np.asarray(approx, np.float64))

    # min over rank-4 W' of |XW - XW'| is the Eckart-Young bound of XW. float32 A, B and
    # their product move |XW - XW'| by <= |X·δ| <~ 8·u·‖XW‖ (39) -> 2e-6 of the bound (21)
    bound = np.sqrt(np.sum(np.linalg.svd(x @ kernel, compute_uv=False)[4:] ** 2))
    assert output_error(calibrated) == pytest.approx(bound, rel=1e-5)
    assert output_error(plain) > 1.2 * bound  # plain SVD ignores which directions X uses


def test_calibrated_factorize_of_an_encoder_at_full_rank_is_exact():
    from lowrank_jax.models import build_encoder, default_config

    config = default_config()
    config.update(vocab_size=16, max_len=8, dim=16, heads=2, num_layers=1, dropout=0.0)
    model = build_encoder(config, rngs=nnx.Rngs(0))
    model.eval()
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 16, (4, 8)), jnp.int32)
    mask = jnp.arange(8)[None, :] < jnp.asarray([[8], [5], [3], [8]])
    before = model(tokens, mask)
    factorize(
        model,
        r"layers\.0\.ffn\.(up|down)",
        rank=16,
        calibration=[{"tokens": tokens, "mask": mask, "label": None}],
    )
    assert isinstance(model.layers[0].ffn.up, FactorizedDense)
    # float32 A, B of a float64 whitened SVD, (x·A)·B against x·W: up 34·u·Σ|x||A||B| (13),
    # down 82·u·18 (|A||B| > |W|: S⁻ᵀ's spread), x·W 80·u·6 -> 1.4e-4 (u = 2^-24)
    np.testing.assert_allclose(model(tokens, mask), before, atol=2e-4)
    with pytest.raises(ValueError, match="calibration: no batches"):
        factorize(model, r"layers\.0\.attention\.query", rank=4, calibration=[])


def _loras(model):
    return {".".join(map(str, p)): m for p, m in nnx.iter_modules(model) if isinstance(m, LoRA)}


def test_lora_rules_first_match_wins_with_their_own_rank_and_alpha():
    model = apply_lora(
        Toy(nnx.Rngs(0)),
        QV,  # the catch-all rule, last: W_q, W_v of the layers no rule took
        rank=2,
        alpha=4.0,
        rules=[(r"layers\.0\.attention\.query", 8, 16.0), (r"layers\.\d+\.ffn_in", 4, None)],
        rngs=nnx.Rngs(1),
    )
    got = {path: (m.rank, m.scale) for path, m in _loras(model).items()}
    assert got == {
        "layers.0.attention.query": (8, 2.0),
        "layers.0.ffn_in": (4, 1.0),
        "layers.1.ffn_in": (4, 1.0),
        "layers.0.attention.value": (2, 2.0),
        "layers.1.attention.query": (2, 2.0),
        "layers.1.attention.value": (2, 2.0),
    }
    assert ranks(model) == {path: rank for path, (rank, _) in got.items()}


def test_a_rule_selecting_nothing_names_itself_and_the_nearest_paths():
    with pytest.raises(ValueError) as caught:
        apply_lora(Toy(nnx.Rngs(0)), rules=[(r"layers\.0\.attn\.query", 4, None)], rngs=nnx.Rngs(1))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("rules[0]: must be a pattern matching some of the dense layers here:")
    assert "layers.0.attention.query" in message.split("here:")[1].split(", got")[0]
    # a rule whose layers an earlier rule took selects nothing either (first match wins)
    with pytest.raises(
        ValueError, match=r"^rules\[1\]: must be a pattern selecting a layer no earl"
    ):
        apply_lora(Toy(nnx.Rngs(0)), rules=[(QV, 4, None), (r".*query", 2, None)], rngs=nnx.Rngs(1))


def test_merge_drift_reports_the_output_change_and_leaves_the_model():
    def model(dtype):
        m = nnx.Sequential(nnx.Linear(D, D, param_dtype=dtype, dtype=jnp.float32, rngs=nnx.Rngs(0)))
        m = apply_lora(m, r"layers\.0", rank=4, alpha=8.0, rngs=nnx.Rngs(1))
        lora = m.layers[0]
        b = lora.lora_b[...]
        lora.lora_b[...] = jax.random.normal(jax.random.key(2), b.shape, b.dtype)
        return m

    x = jax.random.normal(jax.random.key(3), (4, D))
    exact = merge_drift(model(jnp.float32), (x,))
    rounded = merge_drift(model(jnp.bfloat16), (x,))
    # float32: x·W' (16 terms) against x·W + s·(x·A)·B (16 + 20): 2·20·u·Σ|x||W'| (<= 15)
    # -> 4e-5; bfloat16: each merged weight rounded by <= 2^-8·|W'|, at most 2^-8·13 = 0.05
    # and typically ~√16·2^-9·|x||W'| ~ 5e-3, far above float32's 5e-5
    assert exact["max"] < 5e-5
    assert 1e-4 < rounded["max"] < 0.1
    assert rounded["mean"] <= rounded["max"]
    kept = model(jnp.bfloat16)
    merge_drift(kept, (x,))
    assert isinstance(kept.layers[0], LoRA) and not kept.layers[0].merged  # a copy was merged


def test_pissa_checks_every_layer_before_writing_any_base():
    model = Toy(nnx.Rngs(0))
    factorize(model, r"layers\.1\.ffn_in", rank=4)  # one factorized base among dense ones
    before = np.asarray(model.layers[0].ffn_in.kernel[...])
    with pytest.raises(ValueError, match=r"^layers\.1\.ffn_in\.init: must be 'default' for a"):
        apply_lora(model, r"layers\.\d+\.ffn_in", rank=2, init="pissa", rngs=nnx.Rngs(1))
    np.testing.assert_array_equal(model.layers[0].ffn_in.kernel[...], before)  # untouched
    assert not _loras(model)
