"""LoRA: low-rank adaptation of a frozen linear layer (Hu et al. 2021, arXiv 2106.09685).

Eq. (3) of the paper: h = W₀x + ΔWx = W₀x + s·B A x. In this package's
row-vector layout (kernels are [in, out]) that is

    y = base(x) + s · dropout(x) · A · B,    A: [in, R], B: [R, out],

with s = alpha / R (alpha / √R for rsLoRA, Kalajdzievski 2023, arXiv 2312.03732).
A is random (Kaiming-uniform, as in the reference implementation and peft), B
is zero, so the wrapped layer equals its base at init. A and B are
``nnx.LoRAParam``, a variable type of their own, so an optimizer can take only
them (``nnx.Optimizer(model, tx, wrt=nnx.LoRAParam)``).

Shape contract: ``x: [..., in] -> y: [..., out]``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes
from jaxtyping import Array, Float

from lowrank_jax.axes import RANK
from lowrank_jax.config import check_rate
from lowrank_jax.layers.common import annotated, check_rank, kernel_axes_of
from lowrank_jax.layers.factorized import FactorizedDense

# Kaiming-uniform with a=√5, PyTorch's nn.Linear default, used by the LoRA
# reference code and peft for A: U(-1/√in, 1/√in), variance 1/(3·in).
_lora_a_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class LoRA(nnx.Module):
    """Wrap a linear layer (``nnx.Linear``, ``FactorizedDense``) with a LoRA update.

    Args:
      base: the layer to adapt; it needs ``in_features`` and ``out_features``.
      rank: R, an integer in [1, min(in, out)].
      alpha: scaling numerator; ``None`` means s = 1 (alpha = R, or √R with rsLoRA).
      dropout: dropout rate on the LoRA path's input (the base path is untouched).
      rslora: scale by alpha/√R instead of alpha/R.
      rngs: random streams (``params`` for A, ``dropout``).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> layer = LoRA(nnx.Linear(16, 32, rngs=nnx.Rngs(0)), rank=4, rngs=nnx.Rngs(1))
      >>> layer.lora_a.shape, layer.lora_b.shape, layer(jnp.ones((2, 8, 16))).shape
      ((16, 4), (4, 32), (2, 8, 32))
    """

    def __init__(
        self,
        base: nnx.Module,
        rank: int,
        *,
        alpha: float | None = None,
        dropout: float = 0.0,
        rslora: bool = False,
        rngs: nnx.Rngs,
    ):
        in_features, out_features = base.in_features, base.out_features
        check_rank(rank, in_features, out_features)
        check_rate(dropout, "dropout")
        param_dtype = getattr(base, "param_dtype", jnp.float32)
        in_axis, out_axis = kernel_axes_of(base)
        self.base = base
        self.lora_a = annotated(
            nnx.LoRAParam,
            _lora_a_init(rngs.params(), (in_features, rank), param_dtype),
            (in_axis, RANK),
        )
        self.lora_b = annotated(
            nnx.LoRAParam, jnp.zeros((rank, out_features), param_dtype), (RANK, out_axis)
        )
        self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.alpha = alpha
        self.rslora = rslora
        self.merged = False

    @property
    def scale(self) -> float:
        """s = alpha/R, or alpha/√R with rsLoRA; 1 when alpha is None."""
        if self.alpha is None:
            return 1.0
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    def __call__(self, x: Float[Array, "... in"]) -> Float[Array, "... out"]:
        y = self.base(x)
        if self.merged:
            return y
        h = self.dropout(x) if self.dropout is not None else x
        h, a, b = dtypes.promote_dtype(
            (h, self.lora_a[...], self.lora_b[...]), dtype=getattr(self.base, "dtype", None)
        )
        return y + self.scale * jnp.dot(jnp.dot(h, a), b)

    def delta(self) -> Float[Array, "in out"]:
        """The update s·A·B that merging adds to the base kernel."""
        return self.scale * (self.lora_a[...] @ self.lora_b[...])

    def merge(self) -> None:
        """Fold s·A·B into the base so that a call costs only the base (no-op if merged).

        A dense base gets W ← W + s·A·B. A ``FactorizedDense`` base stays factorized
        and exact: its factors grow to [A_base, s·A] and [B_base; B] (rank R_base + R).
        """
        if self.merged:
            return
        base = self.base
        if isinstance(base, FactorizedDense):
            a, b = self.scale * self.lora_a[...], self.lora_b[...]
            base.a.set_value(jnp.concatenate([base.a[...], a.astype(base.a.dtype)], axis=1))
            base.b.set_value(jnp.concatenate([base.b[...], b.astype(base.b.dtype)], axis=0))
        else:
            kernel = self._base_kernel()
            kernel[...] = kernel[...] + self.delta().astype(kernel.dtype)
        self.merged = True

    def unmerge(self) -> None:
        """Undo ``merge``: the base gets back its own kernel (no-op if not merged)."""
        if not self.merged:
            return
        base = self.base
        if isinstance(base, FactorizedDense):
            keep = base.rank - self.rank
            base.a.set_value(base.a[...][:, :keep])
            base.b.set_value(base.b[...][:keep])
        else:
            kernel = self._base_kernel()
            kernel[...] = kernel[...] - self.delta().astype(kernel.dtype)
        self.merged = False

    def _base_kernel(self) -> nnx.Variable:
        kernel = getattr(self.base, "kernel", None)
        if not isinstance(kernel, nnx.Variable) or kernel.shape != (
            self.in_features,
            self.out_features,
        ):
            raise TypeError(
                f"cannot merge into a {type(self.base).__name__}: merging needs a FactorizedDense "
                f"or a layer with a [{self.in_features}, {self.out_features}] kernel"
            )
        return kernel

    def macs_per_token(self) -> int:
        """Base multiply-adds plus R·(in + out) for the unmerged LoRA path."""
        from lowrank_jax.layers.flops import macs_per_token

        extra = 0 if self.merged else self.rank * (self.in_features + self.out_features)
        return macs_per_token(self.base) + extra
