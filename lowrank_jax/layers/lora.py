"""LoRA: low-rank adaptation of a frozen linear layer (Hu et al. 2021, arXiv 2106.09685).

Eq. (3) of the paper: h = W₀x + ΔWx = W₀x + s·B A x. In this package's
row-vector layout (kernels are [in, out]) that is

    y = base(x) + s · dropout(x) · A · B,    A: [in, R], B: [R, out],

with s = alpha / R (alpha / √R for rsLoRA, Kalajdzievski 2023, arXiv 2312.03732).
A is random (Kaiming-uniform, as in the reference implementation and peft), B
is zero, so the wrapped layer equals its base at init. A and B are
``nnx.LoRAParam``, a variable type of their own, so an optimizer can take only
them (``nnx.Optimizer(model, tx, wrt=nnx.LoRAParam)``).

Variants (``variant``, ``init``; the defaults are plain LoRA as above):
- DoRA (Liu et al. 2024, arXiv 2402.09353; peft's ``use_dora=True``): the
  adapted weight W + s·A·B is split into a trained magnitude m [out] and its
  direction, W' = m · (W + s·A·B) / ‖W + s·A·B‖ (norms per output feature, over
  the input axis; m starts at ‖W‖, so the layer equals its base at init). The
  norm is a constant in the backward pass (the paper's Section 4.3, as peft).
- PiSSA (Meng et al. 2024, arXiv 2404.02948): A, B start as the top-R
  singular directions of W (s·A·B = W's rank-R truncation) and the base keeps
  the residual W − s·A·B, frozen; OLoRA (arXiv 2406.01775): the same with the
  first R columns / rows of W's QR decomposition. Both need a dense base.

Shape contract: ``x: [..., in] -> y: [..., out]``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn import dtypes
from jaxtyping import Array, Float

from lowrank_jax.axes import RANK
from lowrank_jax.config import check_choice, check_rate, fail
from lowrank_jax.layers.common import annotated, check_rank, kernel_axes_of
from lowrank_jax.layers.factorized import FactorizedDense

# Kaiming-uniform with a=√5, PyTorch's nn.Linear default, used by the LoRA
# reference code and peft for A: U(-1/√in, 1/√in), variance 1/(3·in).
_lora_a_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
VARIANTS = ("lora", "dora")
INITS = ("default", "pissa", "olora")


def check_init(init: str, base: nnx.Module) -> None:
    """``init`` (field ``init``): PiSSA / OLoRA need a base with a dense kernel to split."""
    check_choice(init, "init", INITS)
    kernel = getattr(base, "kernel", None)
    if init != "default" and (
        isinstance(base, FactorizedDense) or not isinstance(kernel, nnx.Variable)
    ):
        fail(
            "init",
            f"'default' for a {type(base).__name__} base ({init} needs a dense kernel)",
            init,
        )


class MergedNorm(nnx.Variable):
    """DoRA's ‖W + s·A·B‖ at merge time, kept to undo the merge exactly (not trained)."""


class StartingFactors(nnx.Variable):
    """PiSSA / OLoRA's A₀, B₀ (not trained): W = base + s·A₀·B₀, so the adapter is the
    plain LoRA s·(A·B − A₀·B₀) on the original W (``peft_io.export_peft``)."""


class LoRA(nnx.Module):
    """Wrap a linear layer (``nnx.Linear``, ``FactorizedDense``) with a LoRA update.

    Args:
      base: the layer to adapt; it needs ``in_features`` and ``out_features``.
      rank: R, an integer in [1, min(in, out)].
      alpha: scaling numerator; ``None`` means s = 1 (alpha = R, or √R with rsLoRA).
      dropout: dropout rate on the LoRA path's input (the base path is untouched).
      rslora: scale by alpha/√R instead of alpha/R.
      variant: ``"lora"`` or ``"dora"`` (a trained magnitude per output feature).
      init: ``"default"`` (A random, B zero), ``"pissa"`` or ``"olora"`` (A, B
        from W's SVD or QR, the base left with the residual; dense base only).
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
        variant: str = "lora",
        init: str = "default",
        rngs: nnx.Rngs,
    ):
        in_features, out_features = base.in_features, base.out_features
        check_rank(rank, in_features, out_features)
        check_rate(dropout, "dropout")
        check_choice(variant, "variant", VARIANTS)
        check_init(init, base)
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
        self.variant, self.init = variant, init
        self.merged = False
        if init != "default":
            self._start_from_weight(init)
        if variant == "dora":  # m = ‖W + s·A·B‖ per output feature: the same layer at init
            self.magnitude = annotated(
                nnx.LoRAParam, self._norm(self._adapted()).astype(param_dtype), (out_axis,)
            )
            self.merged_norm = MergedNorm(jnp.ones((out_features,), jnp.float32))

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
        dtype = getattr(self.base, "dtype", None)
        h, a, b = dtypes.promote_dtype((h, self.lora_a[...], self.lora_b[...]), dtype=dtype)
        update = low_rank_product(h, a, b, self.scale)
        if self.variant == "lora":
            return y + update
        # DoRA, as peft: y + (m/‖W + s·A·B‖ − 1)·(h·W) + m/‖W + s·A·B‖ · s·h·A·B
        weight = self.base_weight()
        norm = jax.lax.stop_gradient(self._norm(self._adapted()))
        ratio = self._ratio(norm)  # float32; 1 where a column is all zero
        if self.dropout is None:  # the base's own output, less its bias
            bias = getattr(self.base, "bias", None)
            plain = y if bias is None else y - bias[...].astype(y.dtype)
        else:  # the dropped input through W (peft's path when dropout is on)
            plain = jnp.dot(h, weight.astype(h.dtype))
        out = y + (ratio - 1).astype(y.dtype) * plain + ratio.astype(y.dtype) * update
        return out.astype(y.dtype)

    def _ratio(self, norm: Float[Array, " out"]) -> Float[Array, " out"]:
        """m / ‖W + s·A·B‖ in float32 (1 for an all-zero column, not 0/0)."""
        magnitude = self.magnitude[...].astype(jnp.float32)
        return jnp.where(norm > 0, magnitude / jnp.where(norm > 0, norm, 1.0), 1.0)

    @staticmethod
    def _norm(weight: Float[Array, "in out"]) -> Float[Array, " out"]:
        """‖·‖ per output feature (over the input axis), in float32."""
        return jnp.linalg.norm(weight.astype(jnp.float32), axis=0)

    def _adapted(self) -> Float[Array, "in out"]:
        """W + s·A·B in float32."""
        return self.base_weight().astype(jnp.float32) + self.delta()

    def base_weight(self) -> Float[Array, "in out"]:
        """The base's [in, out] weight: its kernel, or A·B of a ``FactorizedDense``."""
        if isinstance(self.base, FactorizedDense):
            return self.base.dense_kernel()
        return self._base_kernel()[...]

    def _start_from_weight(self, init: str) -> None:
        """PiSSA / OLoRA, as peft initialises them; the base keeps W − s·A·B.

        PiSSA: s·A·B is W's rank-R truncation (A, B split √σ / √s each side).
        OLoRA: A, B are the first R rows of R and columns of Q in Wᵀ = Q·R (peft's
        ``olora_init`` on the [out, in] weight), unscaled.
        """
        kernel = self.base.kernel  # a dense kernel: check_init ran in __init__
        weight = np.asarray(kernel[...], np.float64)
        r = self.rank
        if init == "pissa":
            u, sv, vt = np.linalg.svd(weight, full_matrices=False)
            root = np.sqrt(sv[:r] / self.scale)
            a, b = u[:, :r] * root, root[:, None] * vt[:r]
        else:
            q, upper = np.linalg.qr(weight.T)
            a, b = upper[:r].T, q[:, :r].T
        dtype = self.lora_a[...].dtype
        self.lora_a[...] = jnp.asarray(a, dtype)
        self.lora_b[...] = jnp.asarray(b, dtype)
        self.start_a = StartingFactors(self.lora_a[...])
        self.start_b = StartingFactors(self.lora_b[...])
        kernel[...] = jnp.asarray(weight - self.scale * a @ b, kernel[...].dtype)

    def delta(self) -> Float[Array, "in out"]:
        """The update s·A·B that merging adds to the base kernel, in float32."""
        a, b = (v[...].astype(jnp.float32) for v in (self.lora_a, self.lora_b))
        return self.scale * (a @ b)

    def merge(self) -> None:
        """Fold the update into the base so that a call costs only the base (no-op if merged).

        A dense base gets W ← W + s·A·B (DoRA: then each output column scaled to
        its magnitude, m/‖W + s·A·B‖), computed in float32 whatever the parameter
        dtype. A ``FactorizedDense`` base stays factorized and exact: its factors
        grow to [A_base, s·A] and [B_base; B] (rank R_base + R; DoRA scales B's
        columns).
        """
        if self.merged:
            return
        base, ratio = self.base, None
        if self.variant == "dora":
            norm = self._norm(self._adapted())
            self.merged_norm[...] = norm
            ratio = self._ratio(norm)
        if isinstance(base, FactorizedDense):
            a, b = self.scale * self.lora_a[...], self.lora_b[...]
            grown = jnp.concatenate([base.b[...], b.astype(base.b.dtype)], axis=0)
            if ratio is not None:
                grown = (grown.astype(jnp.float32) * ratio).astype(base.b.dtype)
            base.a.set_value(jnp.concatenate([base.a[...], a.astype(base.a.dtype)], axis=1))
            base.b.set_value(grown)
        else:
            kernel = self._base_kernel()
            merged = kernel[...].astype(jnp.float32) + self.delta()
            if ratio is not None:
                merged = merged * ratio
            kernel[...] = merged.astype(kernel.dtype)
        self.merged = True

    def unmerge(self) -> None:
        """Undo ``merge``: the base gets back its own kernel (no-op if not merged)."""
        if not self.merged:
            return
        base = self.base
        ratio = None
        if self.variant == "dora":
            ratio = self._ratio(self.merged_norm[...])
        if isinstance(base, FactorizedDense):
            keep = base.rank - self.rank
            b = base.b[...][:keep]
            if ratio is not None:
                b = (b.astype(jnp.float32) / ratio).astype(base.b.dtype)
            base.a.set_value(base.a[...][:, :keep])
            base.b.set_value(b)
        else:
            kernel = self._base_kernel()
            merged = kernel[...].astype(jnp.float32)
            if ratio is not None:
                merged = merged / ratio
            kernel[...] = (merged - self.delta()).astype(kernel.dtype)
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


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def low_rank_product(
    h: Float[Array, "... in"], a: Float[Array, "in r"], b: Float[Array, "r out"], scale: float
) -> Float[Array, "... out"]:
    """``scale · (h·A)·B``, LoRA's update, with a backward pass XLA's CPU compiles well.

    The same gradients as autodiff's. The only change: the incoming gradient is
    materialised before its contractions over the tokens (an optimisation
    barrier). Without it XLA fuses the layer after's elementwise backward (e.g.
    GELU's, for an FFN's up projection) into the transposed copy that dB's
    contraction wants, a strided loop that cost ~85 ms per layer per step at
    B = 32, N = 64 on 2 cores, and made LoRA on every linear layer slower than
    full fine-tuning.
    """
    return scale * jnp.dot(jnp.dot(h, a), b)


def _low_rank_forward(h, a, b, scale):
    ha = jnp.dot(h, a)
    return scale * jnp.dot(ha, b), (h, a, b, ha)


def _low_rank_backward(scale, residuals, g):
    h, a, b, ha = residuals
    g = jax.lax.optimization_barrier(g)
    g_ha = scale * jnp.dot(g, b.T)  # [..., r]
    tokens = tuple(range(h.ndim - 1))
    contract = lambda x, y: jax.lax.dot_general(x, y, ((tokens, tokens), ((), ())))  # noqa: E731
    d_b = scale * contract(ha, g)  # [r, out]
    d_a = contract(h, g_ha)  # [in, r]
    d_h = jnp.dot(g_ha, a.T)
    return d_h.astype(h.dtype), d_a.astype(a.dtype), d_b.astype(b.dtype)


low_rank_product.defvjp(_low_rank_forward, _low_rank_backward)
