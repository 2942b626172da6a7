"""Bottleneck adapters (Houlsby et al. 2019, arXiv 1902.00751, Fig. 2).

    adapter(x) = x + up(act(down(x))),    down: [D, R], up: [R, D],

inserted after a layer's output (Houlsby place one after the attention output
projection and one after the FFN, before each residual add). ``up`` starts at
zero, so an adapter is the identity at init. Its parameters are
``AdapterParam``, a variable type of their own, so an optimizer can take only them.

Shape contract: ``x: [..., D] -> y: [..., D]``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from lowrank_jax.axes import RANK, AxisName
from lowrank_jax.config import check_int
from lowrank_jax.layers.common import annotated


class AdapterParam(nnx.Param):
    """Parameters of bottleneck adapters."""


class Adapter(nnx.Module):
    """x + up(act(down(x))) with a bottleneck of width R; identity at init.

    Args:
      dim: D, the width of the input and output.
      bottleneck: R, an integer in [1, D].
      activation: the nonlinearity between down and up.
      axis: logical name of the D axis (e.g. "embed").
      rngs: random streams (``params``).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> adapter = Adapter(16, 4, rngs=nnx.Rngs(0))
      >>> x = jnp.ones((2, 8, 16))
      >>> adapter(x).shape, bool((adapter(x) == x).all())
      ((2, 8, 16), True)
    """

    def __init__(
        self,
        dim: int,
        bottleneck: int,
        *,
        activation: Callable[[Array], Array] = nnx.gelu,
        axis: AxisName = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        check_int(bottleneck, "bottleneck", high=dim, why=f"dim = {dim}")
        init = nnx.initializers.lecun_normal()
        self.down = annotated(
            AdapterParam, init(rngs.params(), (dim, bottleneck), param_dtype), (axis, RANK)
        )
        self.down_bias = annotated(AdapterParam, jnp.zeros((bottleneck,), param_dtype), (RANK,))
        self.up = annotated(AdapterParam, jnp.zeros((bottleneck, dim), param_dtype), (RANK, axis))
        self.up_bias = annotated(AdapterParam, jnp.zeros((dim,), param_dtype), (axis,))
        self.activation = activation
        self.dim = dim
        self.bottleneck = bottleneck

    def __call__(self, x: Float[Array, "... D"]) -> Float[Array, "... D"]:
        h = self.activation(
            x @ self.down[...].astype(x.dtype) + self.down_bias[...].astype(x.dtype)
        )
        return x + h @ self.up[...].astype(x.dtype) + self.up_bias[...].astype(x.dtype)

    def macs_per_token(self) -> int:
        """2·D·R multiply-adds per token."""
        return 2 * self.dim * self.bottleneck


class WithAdapter(nnx.Module):
    """``adapter(layer(x))``: a layer followed by an adapter on its output.

    This is what ``surgery.add_adapters`` puts in place of a selected layer.
    """

    def __init__(self, layer: nnx.Module, adapter: Adapter):
        self.layer = layer
        self.adapter = adapter
        self.in_features = getattr(layer, "in_features", None)
        self.out_features = adapter.dim

    def __call__(self, x: Array, *args, **kwargs) -> Array:
        return self.adapter(self.layer(x, *args, **kwargs))

    def macs_per_token(self) -> int:
        from lowrank_jax.layers.flops import macs_per_token

        return macs_per_token(self.layer) + self.adapter.macs_per_token()
