import jax
import numpy as np
import pytest
from flax import nnx

from lowrank_jax.config import train_defaults
from lowrank_jax.layers.factorized import frobenius_paths, frobenius_penalty
from lowrank_jax.models import build_encoder, default_config
from lowrank_jax.surgery import trainable_filter
from lowrank_jax.train import step
from lowrank_jax.train.state import single_device_mesh, train_state


def _train(**changes):
    cfg = train_defaults().train
    cfg.update({"steps": 100, "warmup_steps": 10, "learning_rate": 1.0, **changes})
    return cfg


def test_schedules():
    cosine = step.make_schedule(_train())
    # float32 schedule arithmetic: a few roundings of values <= 1 (u = 6e-8); approx's
    # default rel 1e-6 is 17u, abs 1e-6 covers 0.5·(1 + cos π) = 0.5·u-sized residue
    assert float(cosine(0)) == 0.0 and float(cosine(10)) == pytest.approx(1.0)
    assert float(cosine(100)) == pytest.approx(0.0, abs=1e-6) and 0 < float(cosine(55)) < 1
    rsqrt = step.make_schedule(_train(schedule="rsqrt"))
    assert float(rsqrt(10)) == pytest.approx(1.0) and float(rsqrt(40)) == pytest.approx(0.5)
    assert float(step.make_schedule(_train(schedule="constant"))(70)) == pytest.approx(1.0)


def test_validate_names_fields():
    with pytest.raises(
        ValueError, match=r"^train\.schedule: must be one of cosine, rsqrt, constant, got 'linear'"
    ):
        step.validate(_train(schedule="linear"))
    with pytest.raises(ValueError, match=r"^train\.steps: must be an integer >= 1, got 0"):
        step.validate(_train(steps=0))
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(
            ValueError, match=r"^train\.learning_rate: must be a finite number >= 0"
        ):
            step.validate(_train(learning_rate=bad))


def test_only_the_trainable_subset_gets_optimizer_state():
    cfg = default_config()
    cfg.update(vocab_size=20, max_len=8, dim=16, heads=2)
    cfg.ffn.dim = 32
    cfg.lora.rank = 2
    model = build_encoder(cfg, rngs=nnx.Rngs(0))
    wrt = trainable_filter(model, "lora")
    optimizer = nnx.Optimizer(model, step.make_optimizer(_train()), wrt=wrt)
    moments = nnx.state(optimizer, nnx.OptVariable)
    sizes = sum(x.size for x in jax.tree.leaves(moments))
    lora = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam)))
    assert sizes == 2 * lora  # Adam's mu and nu, for the LoRA parameters only


def test_weight_decay_only_on_matrices():
    tx = step.make_optimizer(
        _train(schedule="constant", warmup_steps=0, weight_decay=0.5, grad_clip=0.0)
    )
    params = {"w": np.ones((2, 2), np.float32), "b": np.ones((2,), np.float32)}
    zeros = jax.tree.map(np.zeros_like, params)  # no gradient: only decay can move a parameter
    updates, _ = tx.update(zeros, tx.init(params), params)
    # -lr * weight_decay * w = -1 · 0.5 · 1: exact in binary (rtol 1e-7 default)
    np.testing.assert_allclose(updates["w"], -0.5 * np.ones((2, 2)))
    np.testing.assert_array_equal(updates["b"], np.zeros(2))


def _factorized_encoder(decay: float):
    cfg = default_config()
    cfg.update(vocab_size=20, max_len=8, dim=16, heads=2)
    cfg.ffn.dim = 32
    cfg.ffn.dense.update(kind="factorized", rank=4, frobenius_decay=decay)
    return build_encoder(cfg, rngs=nnx.Rngs(0))


def test_frobenius_decayed_factors_skip_adamw_decay():
    model = _factorized_encoder(0.1)
    no_decay = frobenius_paths(model)
    assert ("layers", 0, "ffn", "up", "a") in no_decay and len(no_decay) == 8  # 2 layers × 2 × A, B
    train = _train(schedule="constant", warmup_steps=0, weight_decay=0.5, grad_clip=0.0)
    optimizer = nnx.Optimizer(model, step.make_optimizer(train, no_decay), wrt=nnx.Param)
    before = nnx.state(model, nnx.Param)
    before = jax.tree.map(np.asarray, before)
    optimizer.update(model, jax.tree.map(np.zeros_like, before))  # only decay moves anything
    after = nnx.state(model, nnx.Param)
    ffn, query = after["layers"][0]["ffn"]["up"], after["layers"][0]["attention"]["query"]
    np.testing.assert_array_equal(ffn["a"][...], before["layers"][0]["ffn"]["up"]["a"])
    np.testing.assert_array_equal(ffn["b"][...], before["layers"][0]["ffn"]["up"]["b"])
    decayed = before["layers"][0]["attention"]["query"]["kernel"] * (1 - 0.5)
    # w - 0.5·w: exact in float32 (a power of two, then Sterbenz); rtol 1e-6 = 17u for
    # another order of the update's few operations
    np.testing.assert_allclose(query["kernel"][...], decayed, rtol=1e-6)


def test_frobenius_penalty_sums_the_decayed_layers():
    model = _factorized_encoder(0.05)
    expected = sum(
        float(getattr(model.layers[i].ffn, name).penalty())
        for i in range(2)
        for name in ("up", "down")
    )
    # the same penalty() per layer; only the 3 float32 additions of 4 positive terms differ
    # from the float64 sum: <= 3u = 1.8e-7 relative
    assert float(frobenius_penalty(model)) == pytest.approx(expected, rel=1e-6)
    assert frobenius_penalty(_factorized_encoder(0.0)) is None  # no term, no changed trace


def test_profile_steps_names_the_field_and_the_range():
    assert step.profile_range(_train()) is None
    assert step.profile_range(_train(profile_steps="10-15")) == (10, 15)
    assert step.profile_range(_train(profile_steps="7")) == (7, 7)
    for bad in ("15-10", "0-3", "90-101", "ten"):
        with pytest.raises(ValueError, match=r"^train\.profile_steps: must be '' or 'FIRST-LAST'"):
            step.validate(_train(profile_steps=bad))


@pytest.mark.parametrize("trainable", ["all", "lora"])
def test_a_lora_step_forms_no_frozen_weight_gradient(trainable):
    """The benchmarks' target 5 (weight gradients): in the compiled LoRA step no
    product has the shape of a frozen weight ([24, 24], [24, 40], [40, 24] here;
    LoRA's are [24, 3], [3, 24], the head's [24, 4]; the activations' [27, ...],
    3 × 9 tokens with the class token, so no forward or dX product matches); full
    fine-tuning, the control, forms one per weight shape."""
    from lowrank_jax import bench
    from lowrank_jax.config import load_config
    from lowrank_jax.train import sharding

    config = load_config("configs/tiny.py:lora=3")
    config.model.update(dim=24, heads=2, max_len=8, num_layers=1)
    config.model.ffn.dim = 40
    config.train.trainable = trainable
    run = train_state(config, single_device_mesh())
    batch = {
        "tokens": np.ones((3, 8), np.int32),
        "mask": np.ones((3, 8), bool),
        "label": np.zeros(3, np.int32),
    }
    compiled = run.train_step.lower(run.state, sharding.place_batch(batch, run.mesh, 3)).compile()
    found = bench.frozen_weight_products(compiled, run.merge(), "lora")
    if trainable == "lora":
        assert found == []
    else:
        shapes = {line.split(" = ")[1].split("{")[0] for line in found}
        assert shapes >= {"f32[24,24]", "f32[24,40]", "f32[40,24]"}, found
