"""The dense-kind registry and FLOP accounting of ``lowrank_jax/layers/__init__.py``."""

import jax.numpy as jnp
import pytest
from flax import nnx

from lowrank_jax.layers import (
    DENSE,
    FactorizedDense,
    LoRA,
    kernel_axes_of,
    macs_per_token,
    make_dense,
)


@pytest.mark.parametrize("kind", sorted(DENSE))
def test_every_kind_is_a_drop_in(kind):
    layer = make_dense(kind, 16, 24, rank=2, kernel_axes=("embed", "mlp"), rngs=nnx.Rngs(0))
    assert layer(jnp.ones((2, 8, 16))).shape == (2, 8, 24)
    assert (layer.in_features, layer.out_features) == (16, 24)
    assert kernel_axes_of(layer) == ("embed", "mlp")


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(ValueError, match=r"^kind: must be one of dense, factorized, got 'lowrank'"):
        make_dense("lowrank", 16, 24, rngs=nnx.Rngs(0))


def test_factorized_needs_rank():
    with pytest.raises(
        ValueError, match=r"^rank: must be set: dense kind 'factorized' needs a rank"
    ):
        make_dense("factorized", 16, 24, rngs=nnx.Rngs(0))


def test_macs_sum_over_a_model():
    class Block(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List(
                [nnx.Linear(16, 32, rngs=rngs), FactorizedDense(32, 16, 4, rngs=rngs)]
            )
            self.extra = LoRA(nnx.Linear(16, 16, rngs=rngs), rank=2, rngs=rngs)

    expected = 16 * 32 + 4 * (32 + 16) + (16 * 16 + 2 * 32)
    assert macs_per_token(Block(nnx.Rngs(0))) == expected
