import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lowrank_jax.layers import Adapter, AdapterParam, macs_per_token


def test_identity_at_init():
    adapter = Adapter(16, 4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 8, 16))
    np.testing.assert_array_equal(adapter(x), x)


def test_forward_after_training():
    adapter = Adapter(16, 4, activation=nnx.relu, rngs=nnx.Rngs(0))
    adapter.up[...] = jax.random.normal(jax.random.key(2), (4, 16))
    adapter.up_bias[...] = jnp.ones(16)
    x = jax.random.normal(jax.random.key(1), (3, 16))
    hidden = np.maximum(x @ np.asarray(adapter.down[...]), 0)
    # float32 x·D (16 terms) then ·U (4): 2·20·u·Σ|x||D||U| (<= 25) -> 6e-5 (u = 2^-24)
    np.testing.assert_allclose(adapter(x), x + hidden @ np.asarray(adapter.up[...]) + 1, atol=1e-4)


def test_params_are_adapter_params():
    state = nnx.state(Adapter(16, 4, rngs=nnx.Rngs(0)), AdapterParam)
    assert sum(x.size for x in jax.tree.leaves(state)) == 16 * 4 + 4 + 4 * 16 + 16


@pytest.mark.parametrize("bottleneck", [0, 17])
def test_bad_bottleneck(bottleneck):
    with pytest.raises(
        ValueError, match=r"^bottleneck: must be an integer in \[1, 16\] \(dim = 16\), got"
    ):
        Adapter(16, bottleneck, rngs=nnx.Rngs(0))


def test_macs_per_token():
    assert macs_per_token(Adapter(16, 4, rngs=nnx.Rngs(0))) == 2 * 16 * 4
