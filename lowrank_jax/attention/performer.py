"""Performer attention, FAVOR+ (Choromanski et al. 2020, arXiv 2009.14794).

Softmax attention is approximated by positive random features (Lemma 1, Eq. 7):

    φ(x) = exp(ωᵀx − ‖x‖²/2) / √M,    ω: [M, K] random features,

applied to q and k after scaling both by K^(-1/4), so φ(q)·φ(k) estimates
exp(q·k/√K) without bias. Then (Eq. 3, Section 2.3)

    out = φ(q) · (φ(k)ᵀ v) / (φ(q) · φ(k)ᵀ 1),    cost O(N·M·K), never O(N²).

Orthogonal random features (Section 2.4) lower the estimator's variance. The
causal variant (Section 2.6) uses prefix sums over the sequence; its largest
intermediate is [B, N, H, M, K], and it is exactly causal: the keys' stabiliser
is a running maximum, so no output sees a later token, to the last bit.
``kernel="relu"`` is the generalized kernel φ(x) = relu(ωᵀx)/√M; with
``features_type="deterministic"`` (LRA's default outside ListOps) there is no ω:
φ(x) = relu(x) + 0.001 on the queries and keys themselves (M = K), linear
attention with ReLU features, as LRA's ``make_fast_generalized_attention``. Numerics
follow the reference implementation: each query's features are stabilised by
subtracting their max (it cancels in the ratio) and the keys' by one max over
all real keys and features (causal: over the keys so far); a small constant
keeps the features positive.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float

from lowrank_jax.attention.favor import (
    FLOOR,
    STABILIZER,
    bidirectional,
    phi,
    projected,
    query_phi,
)
from lowrank_jax.config import check_choice, check_int, fail

KERNELS = ("softmax", "relu")
FEATURES_TYPES = ("random", "deterministic")
REDRAW = ("fixed", "step", "call")
SCALING = ("chi", "sqrt")


def random_features(
    key: jax.Array,
    num_features: int,
    head_dim: int,
    *,
    orthogonal: bool = True,
    scaling: str = "chi",
) -> Float[Array, "M K"]:
    """Random features ω: [M, K] for FAVOR+.

    With ``orthogonal`` (the default), blocks of K rows are QR-orthogonalised
    Gaussian matrices; rows are then rescaled to chi-distributed norms (the
    norms of Gaussian vectors, ``scaling="chi"``) or to √K (``"sqrt"``), as in
    the reference ``GaussianOrthogonalRandomMatrix``. Without it, iid Gaussian rows.

    Example:
      >>> import jax
      >>> random_features(jax.random.key(0), 40, 16).shape
      (40, 16)
    """
    check_choice(scaling, "scaling", SCALING)
    key_blocks, key_norms = jax.random.split(key)
    if not orthogonal:
        return jax.random.normal(key_blocks, (num_features, head_dim))
    blocks = -(-num_features // head_dim)
    gaussian = jax.random.normal(key_blocks, (blocks, head_dim, head_dim))
    q, _ = jnp.linalg.qr(gaussian)  # [blocks, K, K], orthonormal columns
    rows = jnp.swapaxes(q, 1, 2).reshape(blocks * head_dim, head_dim)[:num_features]
    if scaling == "chi":
        norms = jnp.linalg.norm(jax.random.normal(key_norms, (num_features, head_dim)), axis=1)
    else:
        norms = jnp.full((num_features,), math.sqrt(head_dim))
    return rows * norms[:, None]


def feature_map(
    x: Float[Array, "B N H K"],
    features: Float[Array, "M K"] | None,
    *,
    kernel: str = "softmax",
    is_query: bool,
    mask: Bool[Array, "B N"] | None = None,
) -> Float[Array, "B N H M"]:
    """φ(x) for queries or keys (float32); padded keys get φ = 0.

    ``features`` None: deterministic (relu kernel only), φ(x) = relu(x) + 0.001.
    """
    _check(features, kernel)
    if is_query:  # each query stabilised by its own maximum: it cancels in the ratio
        return query_phi(x, features, kernel)
    exponent = projected(x, features, kernel)  # [B, N, H, M]
    shift = None
    if kernel == "softmax":  # one constant over all real keys and features, per (batch, head)
        real = None if mask is None else mask[:, :, None, None]
        masked = exponent if real is None else jnp.where(real, exponent, -jnp.inf)
        shift = jnp.max(masked, axis=(1, 3), keepdims=True)
        shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
    out = phi(exponent, shift, kernel)
    if mask is not None:
        out = out * mask[:, :, None, None]
    return out


def _check(features, kernel: str) -> None:
    check_choice(kernel, "kernel", KERNELS)
    if features is None and kernel != "relu":
        fail("kernel", "'relu' with deterministic features (no random projection)", kernel)


def _causal_sums(
    k: Float[Array, "B N H K"],
    values: Float[Array, "B N H E"],
    features: Float[Array, "M K"] | None,
    mask: Bool[Array, "B N"] | None,
    kernel: str,
) -> Float[Array, "B N H M E"]:
    """Σ_{j ≤ t} φ(k_j) ⊗ values_j for every t, from keys ≤ t only, to the last bit.

    The softmax kernel's keys are stabilised by the running maximum of their
    exponents over the prefix (an online-softmax scan: the partial sums are
    rescaled whenever the maximum grows), never by a maximum that has seen the
    future; with the stabilising constant added relative to that running maximum.
    """
    if mask is not None:
        values = values * mask[:, :, None, None]
    if kernel == "relu":
        phi_k = feature_map(k, features, kernel=kernel, is_query=False, mask=mask)
        return jnp.cumsum(jnp.einsum("bnhm,bnhe->bnhme", phi_k, values), axis=1)
    num_features = features.shape[0]
    exponent = projected(k, features, kernel)
    # each key's own maximum (padded keys: a floor that any real key overrides)
    own = jax.lax.stop_gradient(jnp.max(exponent, axis=-1, keepdims=True))  # [B, N, H, 1]
    if mask is not None:  # a padded key's exponent too: exp(x − FLOOR) · 0 would be NaN
        own = jnp.where(mask[:, :, None, None], own, FLOOR)
        exponent = jnp.where(mask[:, :, None, None], exponent, FLOOR)
    terms = jnp.einsum("bnhm,bnhe->bnhme", jnp.exp(exponent - own), values)

    def combine(left, right):
        (shift_l, sum_l), (shift_r, sum_r) = left, right
        shift = jnp.maximum(shift_l, shift_r)
        rescale = lambda s, x: x * jnp.exp(s - shift)[..., None]  # noqa: E731
        return shift, rescale(shift_l, sum_l) + rescale(shift_r, sum_r)

    _, sums = jax.lax.associative_scan(combine, (own, terms), axis=1)
    stabilizer = STABILIZER[kernel] * jnp.cumsum(values, axis=1)[:, :, :, None, :]
    return (sums + stabilizer) / math.sqrt(num_features)


def favor(
    q: Float[Array, "B N H K"],
    k: Float[Array, "B N H K"],
    v: Float[Array, "B N H K"],
    features: Float[Array, "M K"] | None,
    mask: Bool[Array, "B N"] | None = None,
    causal: bool = False,
    kernel: str = "softmax",
) -> Float[Array, "B N H K"]:
    """FAVOR+ attention with the given random features; ``mask`` marks real keys.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.ones((2, 8, 2, 4))
      >>> favor(x, x, x, random_features(jax.random.key(0), 16, 4), causal=True).shape
      (2, 8, 2, 4)
    """
    _check(features, kernel)
    if not causal:  # in sequence chunks, the features recomputed in the backward (favor.py)
        return bidirectional(q, k, v, features, mask, kernel)
    phi_q = feature_map(q, features, kernel=kernel, is_query=True)
    values = v.astype(jnp.float32)
    # prefix sums over the sequence, exactly causal: memory O(N·M·K)
    ones = jnp.ones((*values.shape[:-1], 1), jnp.float32)  # the denominator's column
    sums = _causal_sums(k, jnp.concatenate([values, ones], -1), features, mask, kernel)
    both = jnp.einsum("bnhm,bnhme->bnhe", phi_q, sums)
    numerator, denominator = both[..., :-1], both[..., -1]
    denominator = jnp.where(denominator > 0, denominator, 1.0)  # rows with no real key
    return (numerator / denominator[..., None]).astype(v.dtype)


class RandomFeatures(nnx.Variable):
    """Performer's random features: state that is saved, never trained."""


class PerformerAttention(nnx.Module):
    """The FAVOR+ mixer: ``(q, k, v, mask) -> out`` on [B, N, H, K].

    Args:
      heads, max_len, shared: the context every mixer receives (unused here).
      head_dim: K.
      num_features: M.
      kernel: ``"softmax"`` (positive features) or ``"relu"``.
      redraw: ``"fixed"`` (drawn once at init), ``"step"`` (redrawn at every
        call in training mode from the ``features`` rng stream, i.e. once per
        training step under ``nnx.jit``; eval mode uses the fixed ones) or
        ``"call"`` (LRA's ``redraw_features=True``: redrawn at every call,
        evaluation included, from a key that is a function of the queries; LRA
        seeds ``PRNGKey(ceil(sum(q)·1e7))``, we fold the bits of sum(q) into a key,
        so the features depend on the batch, not on a counter).
      orthogonal, scaling: see ``random_features``.
      features_type: ``"random"`` (ω drawn as above) or ``"deterministic"``
        (kernel ``"relu"`` only: no ω, φ on q and k themselves, M = K;
        ``num_features``, ``redraw``, ``orthogonal`` and ``scaling`` do not apply).
      dropout: must be 0 (see ``check``).
      rngs: random streams (``params`` for the fixed features, ``features``).
    """

    def __init__(
        self,
        *,
        heads: int,
        head_dim: int,
        max_len: int,
        num_features: int = 64,
        kernel: str = "softmax",
        redraw: str = "fixed",
        orthogonal: bool = True,
        scaling: str = "chi",
        features_type: str = "random",
        dropout: float = 0.0,
        shared: dict | None = None,
        rngs: nnx.Rngs,
    ):
        del heads, shared
        self.check(
            max_len=max_len,
            dropout=dropout,
            num_features=num_features,
            kernel=kernel,
            redraw=redraw,
            orthogonal=orthogonal,
            scaling=scaling,
            features_type=features_type,
        )
        self.num_features = num_features
        self.head_dim = head_dim
        self.kernel = kernel
        self.redraw = redraw
        self.orthogonal = orthogonal
        self.scaling = scaling
        self.features_type = features_type
        if features_type == "deterministic":
            self.features, self.rngs = nnx.data(None), nnx.data(None)
        else:
            self.features = RandomFeatures(self._draw(rngs.params()))
            self.rngs = rngs["features"].fork() if redraw == "step" else nnx.data(None)
        self.deterministic = False

    def _draw(self, key: jax.Array) -> Float[Array, "M K"]:
        return random_features(
            key,
            self.num_features,
            self.head_dim,
            orthogonal=self.orthogonal,
            scaling=self.scaling,
        )

    @classmethod
    def check(
        cls,
        *,
        max_len: int,
        dropout: float,
        num_features: int,
        kernel: str,
        redraw: str,
        orthogonal: bool,
        scaling: str,
        features_type: str = "random",
    ) -> None:
        """The options' checks (``ConfigError`` naming ``performer.<option>``).

        A non-zero attention dropout is an error, not silently ignored: FAVOR+
        never forms the attention matrix, so there are no weights to drop.
        """
        del max_len
        if dropout:
            fail(
                "dropout",
                "0: Performer (FAVOR+) forms no attention matrix to drop out "
                "(residual and FFN dropout still apply)",
                dropout,
            )
        check_int(num_features, "performer.num_features", high=1 << 20, why="at most 2^20")
        check_choice(kernel, "performer.kernel", KERNELS)
        check_choice(redraw, "performer.redraw", REDRAW)
        if not isinstance(orthogonal, bool):
            fail("performer.orthogonal", "true or false", orthogonal)
        check_choice(scaling, "performer.scaling", SCALING)
        check_choice(features_type, "performer.features_type", FEATURES_TYPES)
        if features_type == "deterministic" and kernel != "relu":
            fail(
                "performer.features_type",
                "'random' with kernel 'softmax' ('deterministic' is for kernel 'relu': "
                "no random projection, as LRA's generalized attention)",
                features_type,
            )

    def features_for(self, q: Float[Array, "B N H K"]) -> Float[Array, "M K"] | None:
        """The random features this call uses (see ``redraw``); None when deterministic."""
        if self.features_type == "deterministic":
            return None
        if self.redraw == "call":
            total = jnp.sum(q, dtype=jnp.float32)
            bits = jax.lax.bitcast_convert_type(total, jnp.uint32)
            return self._draw(jax.random.fold_in(jax.random.key(0), bits))
        if self.redraw == "step" and not self.deterministic:
            return self._draw(self.rngs())
        return self.features[...]

    def __call__(self, q, k, v, mask=None):
        return favor(q, k, v, self.features_for(q), mask, kernel=self.kernel)
