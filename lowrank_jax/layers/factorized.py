"""Factorized dense layer: W ≈ A·B with A: [in, R], B: [R, out].

A drop-in for ``nnx.Linear`` (``(x) -> y`` on the last axis) whose cost per token
is ``R·(in + out)`` multiply-adds instead of ``in·out``. It is trained from scratch,
or built from a dense kernel by truncated SVD (``from_dense``), which by the
Eckart–Young theorem is the best rank-R approximation in Frobenius and spectral norm.

Shape contract: ``x: [..., in] -> y: [..., out]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from flax import nnx
from flax.nnx.nn import dtypes
from jaxtyping import Array, ArrayLike, Float

from lowrank_jax.axes import RANK, KernelAxes
from lowrank_jax.config import check_choice, check_number
from lowrank_jax.layers.common import annotated, check_rank


class FactorizedDense(nnx.Module):
    """y = (x·A)·B + b, a rank-R dense layer.

    Initialisation (``init``):
    - ``"default"``: A and B both LeCun-normal, i.e. Var(A) = 1/in and Var(B) =
      1/R (each factor's own fan-in). Every entry of the product A·B then has
      variance R·(1/in)·(1/R) = 1/in, which is exactly the variance of
      ``nnx.Linear``'s default (LeCun-normal) kernel, so the output variance at
      init matches a same-size dense layer for any rank.
    - ``"spectral"`` (Khodak et al. 2021, "Initialization and regularization of
      factorized neural layers"): draw the dense LeCun-normal kernel W, and set
      A = U_R·diag(√s_R), B = diag(√s_R)·V_Rᵀ from its SVD, so A·B is the best
      rank-R approximation of a dense layer's initialisation and A, B are
      balanced (AᵀA = BBᵀ = diag(s_R)).
    The bias starts at zero.

    ``frobenius_decay`` λ: the training objective gets λ/2·‖A·B‖²_F
    (``penalty``; Khodak et al.'s Frobenius decay: weight decay on the product,
    not on A and B separately, which would decay ‖A‖² + ‖B‖² ≥ 2‖A·B‖_*), and
    AdamW's own decay skips this layer's A and B (``frobenius_paths``).

    Args:
      in_features: input width.
      out_features: output width.
      rank: R, an integer in [1, min(in_features, out_features)].
      use_bias: add a bias of shape [out].
      dtype: computation dtype (``None``: promote inputs and params).
      param_dtype: parameter dtype.
      precision: matmul precision.
      kernel_axes: logical names of the (in, out) axes; A gets (in, "rank"),
        B gets ("rank", out).
      init: ``"default"`` or ``"spectral"`` (above).
      frobenius_decay: λ ≥ 0 (above); 0 = off.
      rngs: random streams (``params``).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> layer = FactorizedDense(16, 32, rank=4, rngs=nnx.Rngs(0))
      >>> layer.a.shape, layer.b.shape, layer(jnp.ones((2, 8, 16))).shape
      ((16, 4), (4, 32), (2, 8, 32))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        *,
        use_bias: bool = True,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        precision: jax.lax.PrecisionLike = None,
        kernel_axes: KernelAxes = (None, None),
        init: str = "default",
        frobenius_decay: float = 0.0,
        rngs: nnx.Rngs,
    ):
        check_rank(rank, in_features, out_features)
        check_init(init, frobenius_decay)
        lecun = nnx.initializers.lecun_normal()
        if init == "spectral":
            u, s, vt = jnp.linalg.svd(
                lecun(rngs.params(), (in_features, out_features), jnp.float32),
                full_matrices=False,
            )
            root = jnp.sqrt(s[:rank])
            a, b = u[:, :rank] * root, root[:, None] * vt[:rank]
        else:
            a = lecun(rngs.params(), (in_features, rank), jnp.float32)
            b = lecun(rngs.params(), (rank, out_features), jnp.float32)
        in_axis, out_axis = kernel_axes
        self.a = annotated(nnx.Param, a.astype(param_dtype), (in_axis, RANK))
        self.b = annotated(nnx.Param, b.astype(param_dtype), (RANK, out_axis))
        if use_bias:
            self.bias = annotated(nnx.Param, jnp.zeros((out_features,), param_dtype), (out_axis,))
        else:
            self.bias = nnx.data(None)
        self.in_features = in_features
        self.out_features = out_features
        self.use_bias = use_bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.kernel_axes = tuple(kernel_axes)
        self.frobenius_decay = float(frobenius_decay)

    @property
    def rank(self) -> int:
        """R, the inner dimension of A·B."""
        return self.a.shape[1]

    def __call__(self, x: Float[Array, "... in"]) -> Float[Array, "... out"]:
        bias = self.bias[...] if self.bias is not None else None
        x, a, b, bias = dtypes.promote_dtype((x, self.a[...], self.b[...], bias), dtype=self.dtype)
        y = jnp.dot(jnp.dot(x, a, precision=self.precision), b, precision=self.precision)
        return y + bias if bias is not None else y

    def dense_kernel(self) -> Float[Array, "in out"]:
        """The full kernel A·B (for analysis and export; the layer never forms it)."""
        return self.a[...] @ self.b[...]

    def penalty(self) -> Float[Array, ""]:
        """λ/2·‖A·B‖²_F, as ⟨AᵀA, BBᵀ⟩ (two [R, R] products; A·B is never formed)."""
        a, b = self.a[...].astype(jnp.float32), self.b[...].astype(jnp.float32)
        return 0.5 * self.frobenius_decay * jnp.sum((a.T @ a) * (b @ b.T))

    def macs_per_token(self) -> int:
        """Multiply-adds per token of the forward pass: R·(in + out)."""
        return self.rank * (self.in_features + self.out_features)

    @classmethod
    def from_dense(
        cls,
        kernel: Float[ArrayLike, "in out"],
        bias: Float[ArrayLike, " out"] | None = None,
        *,
        rank: int | None = None,
        energy: float | None = None,
        whitening: ArrayLike | None = None,
        dtype: jnp.dtype | None = None,
        kernel_axes: KernelAxes = (None, None),
    ) -> FactorizedDense:
        """Build a layer from a dense ``[in, out]`` kernel by truncated SVD.

        With ``kernel = U·diag(s)·Vᵀ``, A = U_R·diag(√s_R) and B = diag(√s_R)·V_Rᵀ:
        the singular values are split evenly so both factors have the same scale.
        Give exactly one of ``rank`` (R in [1, min(in, out)]) and ``energy``
        (e in (0, 1]: the smallest R whose squared singular values keep at least a
        fraction e of the total).

        ``whitening``: a lower-triangular S [in, in] with S·Sᵀ = XᵀX, the second
        moment of the layer's inputs X (activation-aware SVD, SVD-LLM, arXiv
        2403.07378). Then Sᵀ·kernel is truncated instead, A = S⁻ᵀ·U_R·diag(√s_R), and
        the result minimises ‖X·kernel − X·A·B‖_F over rank-R factors, the error on
        those inputs rather than on the weights.

        Example:
          >>> import numpy as np
          >>> w = np.random.default_rng(0).normal(size=(16, 32)).astype("float32")
          >>> FactorizedDense.from_dense(w, rank=4).dense_kernel().shape
          (16, 32)
        """
        dtype_in = jnp.asarray(kernel).dtype
        kernel = np.asarray(kernel, np.float64)  # a one-off host SVD, in double precision
        if kernel.ndim != 2:
            raise ValueError(f"kernel must be 2-D [in, out], got shape {kernel.shape}")
        in_features, out_features = kernel.shape
        U, s, Vt = np.linalg.svd(_truncated(kernel, whitening), full_matrices=False)
        if whitening is not None:
            U = scipy.linalg.solve_triangular(np.asarray(whitening, np.float64).T, U, lower=False)
        rank = _select_rank(s, in_features, out_features, rank=rank, energy=energy)
        root = np.sqrt(s[:rank])
        layer = cls(
            in_features,
            out_features,
            rank,
            use_bias=bias is not None,
            dtype=dtype,
            param_dtype=dtype_in,
            kernel_axes=kernel_axes,
            rngs=nnx.Rngs(0),
        )
        layer.a[...] = jnp.asarray(U[:, :rank] * root, dtype_in)
        layer.b[...] = jnp.asarray(root[:, None] * Vt[:rank], dtype_in)
        if bias is not None:
            layer.bias[...] = jnp.asarray(bias, dtype_in)
        return layer


INITS = ("default", "spectral")


def check_init(init: str, frobenius_decay: float) -> None:
    """The factorized kind's ``init`` and ``frobenius_decay`` fields."""
    check_choice(init, "init", INITS)
    check_number(frobenius_decay, "frobenius_decay", low=0.0)


def _decayed(model: nnx.Module):
    """(path, layer) of every FactorizedDense under Frobenius decay."""
    return (
        (path, m)
        for path, m in nnx.iter_graph(model)
        if isinstance(m, FactorizedDense) and m.frobenius_decay
    )


def frobenius_paths(model: nnx.Module) -> frozenset[tuple]:
    """Paths of the A and B parameters under Frobenius decay (AdamW skips them)."""
    return frozenset((*path, name) for path, _ in _decayed(model) for name in ("a", "b"))


def frobenius_penalty(model: nnx.Module) -> Float[Array, ""] | None:
    """Σ of every Frobenius-decayed layer's ``penalty()``; None when no layer has one."""
    terms = [m.penalty() for _, m in _decayed(model)]
    return sum(terms) if terms else None


def _truncated(kernel: np.ndarray, whitening: ArrayLike | None) -> np.ndarray:
    """The matrix ``from_dense`` truncates: the kernel, or Sᵀ·kernel when whitened."""
    if whitening is None:
        return kernel
    whitening = np.asarray(whitening, np.float64)
    if whitening.shape != (kernel.shape[0], kernel.shape[0]):
        raise ValueError(
            f"whitening must be [in, in] = {(kernel.shape[0],) * 2}, got shape {whitening.shape}"
        )
    return whitening.T @ kernel


def singular_values(kernel: ArrayLike, whitening: ArrayLike | None = None) -> np.ndarray:
    """The singular values ``from_dense`` truncates (float64, descending): a rank-R
    truncation drops the squared sum of those past R (``ranks.truncation_error``)."""
    kernel = np.asarray(kernel, np.float64)
    return np.linalg.svd(_truncated(kernel, whitening), compute_uv=False)


def rank_for_energy(singular_values: np.ndarray, energy: float) -> int:
    """Smallest R with sum(s[:R]²) ≥ energy · sum(s²), for s sorted descending."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy!r}")
    power = np.asarray(singular_values, np.float64) ** 2
    if power.sum() == 0.0:  # an all-zero kernel: any rank keeps all of nothing
        return 1
    kept = np.cumsum(power) / power.sum()
    # A float32-sized tolerance: a threshold hit exactly (energy=1.0 included) is
    # not defeated by round-off in float32 weights or in the cumsum.
    return int(np.searchsorted(kept, energy - 1e-6) + 1)


def _select_rank(
    s: np.ndarray, in_features: int, out_features: int, *, rank: int | None, energy: float | None
) -> int:
    if (rank is None) == (energy is None):
        raise ValueError(
            "give exactly one of rank (an integer in "
            f"[1, {min(in_features, out_features)}]) and energy (a fraction in (0, 1])"
        )
    if energy is not None:
        return min(rank_for_energy(s, energy), len(s))
    return check_rank(rank, in_features, out_features)
