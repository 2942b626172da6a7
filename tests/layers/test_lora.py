import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lowrank_jax.layers import FactorizedDense, LoRA, macs_per_token

BASES = {
    "dense": lambda: nnx.Linear(16, 24, rngs=nnx.Rngs(0)),
    "factorized": lambda: FactorizedDense(16, 24, rank=3, rngs=nnx.Rngs(0)),
}


def _x():
    return jax.random.normal(jax.random.key(7), (2, 8, 16))


def _trained(lora):
    """Give B a non-zero value, as after some training."""
    lora.lora_b[...] = jax.random.normal(jax.random.key(3), lora.lora_b.shape)
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
    np.testing.assert_allclose(lora(_x()), unmerged, atol=1e-5)
    np.testing.assert_allclose(base(_x()), unmerged, atol=1e-5)  # folded into the base
    lora.unmerge()
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
    np.testing.assert_allclose(lora(x), expected, atol=1e-5)


def test_dropout_only_in_training_and_only_on_lora_path():
    lora = _trained(
        LoRA(nnx.Linear(16, 24, rngs=nnx.Rngs(0)), rank=2, dropout=0.5, rngs=nnx.Rngs(1))
    )
    x = _x()
    train_out = lora(x)
    lora.eval()
    eval_out = lora(x)
    expected = lora.base(x) + x @ lora.lora_a[...] @ lora.lora_b[...]
    np.testing.assert_allclose(eval_out, expected, atol=1e-5)
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
