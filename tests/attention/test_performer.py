import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lowrank_jax.attention import make_attention, performer
from lowrank_jax.attention.softmax import attend

# Jitted once per shape: the code users run, and far faster than op-by-op dispatch.
favor = jax.jit(performer.favor, static_argnames=("causal", "kernel"))
attend = jax.jit(attend)
feature_map = jax.jit(performer.feature_map, static_argnames=("kernel", "is_query"))
random_features = jax.jit(
    performer.random_features, static_argnums=(1, 2), static_argnames=("orthogonal", "scaling")
)


# Bounds below: u = 2^-24 (float32 unit roundoff). FAVOR+ outputs are ratios of sums of
# positive features times v, so a sum of n terms is off by <= n·u·max|v| after the division.


def _qkv(n=32, k=8, seed=0, scale=0.5):
    return scale * jax.random.normal(jax.random.key(seed), (3, 2, n, 2, k))


def test_random_features_shapes_orthogonality_and_norms():
    w = random_features(jax.random.key(0), 20, 8, scaling="sqrt")
    assert w.shape == (20, 8)
    # rows rescaled to √8 then re-normed in float32: ~(2·8 + 4)·u relative = 1.2e-6
    np.testing.assert_allclose(jnp.linalg.norm(w, axis=1), np.sqrt(8), rtol=2e-6)
    block = w[:8] / np.sqrt(8)
    # float32 Householder QR: ‖QQᵀ - I‖ <~ K²·u (K=8) = 4e-6, plus the rescaling's few u
    np.testing.assert_allclose(block @ block.T, np.eye(8), atol=1e-5)  # one block: orthonormal
    chi = random_features(jax.random.key(0), 20, 8)
    assert not np.allclose(jnp.linalg.norm(chi, axis=1), np.sqrt(8))
    assert random_features(jax.random.key(0), 20, 8, orthogonal=False).shape == (20, 8)
    with pytest.raises(ValueError, match=r"^scaling: must be one of chi, sqrt, got 'unit'"):
        performer.random_features(jax.random.key(0), 20, 8, scaling="unit")


def _mse(num_features, seed, orthogonal=True):
    q, k, v = _qkv()
    features = random_features(jax.random.key(100 + seed), num_features, 8, orthogonal=orthogonal)
    return float(jnp.mean((favor(q, k, v, features) - attend(q, k, v)) ** 2))


def test_error_falls_as_features_grow():
    errors = [np.mean([_mse(m, seed) for seed in range(5)]) for m in (16, 64, 256)]
    assert errors[0] > errors[1] > errors[2]


def test_favor_is_far_closer_to_exact_attention_than_uniform_attention():
    """A bound, not only a trend: a biased estimator (e.g. the ReLU kernel in softmax's
    place, or a dropped ‖x‖²/2 term) stays near the uniform average's error."""
    q, k, v = _qkv()
    exact = attend(q, k, v)
    uniform = float(jnp.mean((jnp.broadcast_to(v.mean(1, keepdims=True), v.shape) - exact) ** 2))
    assert np.mean([_mse(256, seed) for seed in range(5)]) < 0.5 * uniform
    relu = [
        float(
            jnp.mean(
                (favor(q, k, v, random_features(jax.random.key(s), 256, 8), kernel="relu") - exact)
                ** 2
            )
        )
        for s in range(5)
    ]
    assert np.mean(relu) > 0.5 * uniform  # the bound tells a biased estimator apart


def test_orthogonal_beats_iid_on_average():
    seeds = range(10)
    orthogonal = np.mean([_mse(16, s, orthogonal=True) for s in seeds])
    iid = np.mean([_mse(16, s, orthogonal=False) for s in seeds])
    assert orthogonal < iid


@pytest.mark.parametrize("kernel", ["softmax", "relu"])
def test_causal_equals_quadratic_reference_with_same_features(kernel):
    q, k, v = _qkv(n=16)
    features = random_features(jax.random.key(1), 32, 8)
    phi_q = feature_map(q, features, kernel=kernel, is_query=True)
    phi_k = feature_map(k, features, kernel=kernel, is_query=False)
    scores = jnp.einsum("bnhm,bshm->bhns", phi_q, phi_k) * jnp.tril(jnp.ones((16, 16)))
    expected = (
        jnp.einsum("bhns,bshk->bnhk", scores, v) / scores.sum(-1).transpose(0, 2, 1)[..., None]
    )
    # prefix sums against one product: each side <= (N + M + K + 6 = 62)·u·max|v| (<= 1.8)
    # plus u·|exponent| (<~ 5) for the shifts -> 7e-6 each; 5e-5 leaves margin
    np.testing.assert_allclose(
        favor(q, k, v, features, causal=True, kernel=kernel), expected, atol=5e-5
    )

    def reference(q, k, v):
        phi_q = feature_map(q, features, kernel=kernel, is_query=True)
        phi_k = feature_map(k, features, kernel=kernel, is_query=False)
        scores = jnp.einsum("bnhm,bshm->bhns", phi_q, phi_k) * jnp.tril(jnp.ones((16, 16)))
        out = jnp.einsum("bhns,bshk->bnhk", scores, v)
        return out / scores.sum(-1).transpose(0, 2, 1)[..., None]

    def loss(fn):
        return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))

    causal = loss(lambda q, k, v: performer.favor(q, k, v, features, causal=True, kernel=kernel))
    for ours, theirs in zip(
        jax.grad(causal, (0, 1, 2))(q, k, v),
        jax.grad(loss(reference), (0, 1, 2))(q, k, v),
        strict=True,
    ):
        # the gradients agree too: sums of ~60 terms with Σ|terms| <~ 4·max|grad| (5.3):
        # ~√60·u·21 = 1e-5 per path rounding at random (worst case 60·u·21 = 8e-5)
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_causal_memory_is_linear_in_n():
    n = 37  # a length no other dimension shares
    q, k, v = _qkv(n=n)
    features = random_features(jax.random.key(1), 16, 8)
    jaxpr = jax.make_jaxpr(lambda q, k, v: performer.favor(q, k, v, features, causal=True))(q, k, v)
    shapes = [var.aval.shape for eqn in jaxpr.jaxpr.eqns for var in eqn.outvars]
    assert any(n in shape for shape in shapes)
    assert not any(list(shape).count(n) >= 2 for shape in shapes)  # nothing [.., N, .., N, ..]


def test_padding_masked():
    q, k, v = _qkv(n=12)
    features = random_features(jax.random.key(1), 32, 8)
    mask = jnp.broadcast_to(jnp.arange(12) < 8, (2, 12))
    out = favor(q, k, v, features, mask)
    # padded φ(k) is exactly 0: only the order of the real sums (N + M + K = 52 terms) may
    # differ, 2·52·u·max|v| (<= 2) -> 1.2e-5
    np.testing.assert_allclose(out[:, :8], favor(q[:, :8], k[:, :8], v[:, :8], features), atol=3e-5)


def test_redraw_policies():
    x = jax.random.normal(jax.random.key(1), (2, 8, 16))
    fixed = make_attention(
        "performer", 16, 2, max_len=8, options={"num_features": 8}, rngs=nnx.Rngs(0)
    )
    np.testing.assert_array_equal(fixed(x), fixed(x))
    step = make_attention(
        "performer",
        16,
        2,
        max_len=8,
        options={"num_features": 8, "redraw": "step"},
        rngs=nnx.Rngs(0),
    )
    assert np.abs(np.asarray(step(x) - step(x))).max() > 1e-6  # new features each call
    step.eval()
    np.testing.assert_array_equal(step(x), step(x))  # eval uses the fixed features


def test_redraw_call_is_lras_features_of_the_queries_in_training_and_eval():
    from lowrank_jax.attention.performer import PerformerAttention

    mixer = PerformerAttention(
        heads=2, head_dim=8, max_len=12, num_features=4, redraw="call", rngs=nnx.Rngs(0)
    )
    q, k, v = _qkv(n=12)
    other = q + 0.5
    drawn = mixer.features_for(q)
    assert drawn.shape == (4, 8)
    assert not np.allclose(drawn, mixer.features[...])  # not the features drawn at init
    assert not np.allclose(drawn, mixer.features_for(other))  # another batch, other features
    # the same features through favor, eagerly and jitted: 2·(12 + 4 + 8)·u·max|v| (2) -> 6e-6
    np.testing.assert_allclose(mixer(q, k, v), favor(q, k, v, drawn), atol=1e-5)
    mixer.eval()  # evaluation redraws too (LRA's redraw_features=True), the same way
    np.testing.assert_array_equal(mixer.features_for(q), drawn)
    np.testing.assert_array_equal(mixer(q, k, v), mixer(q, k, v))


def test_attention_dropout_is_rejected_not_ignored():
    with pytest.raises(
        ValueError, match=r"^dropout: must be 0: Performer .* forms no attention matrix"
    ):
        make_attention("performer", 16, 2, max_len=8, dropout=0.1, rngs=nnx.Rngs(0))


@pytest.mark.parametrize(("kernel", "drawn"), [("softmax", True), ("relu", True), ("relu", False)])
def test_causal_outputs_before_t_are_bitwise_blind_to_tokens_from_t(kernel, drawn):
    """Changing keys and values at positions >= t, even to large values, changes nothing < t."""
    q, k, v = _qkv(n=24)
    features = random_features(jax.random.key(1), 16, 8) if drawn else None  # or deterministic
    mask = jnp.broadcast_to(jnp.arange(24) < 20, (2, 24))
    before = np.asarray(favor(q, k, v, features, mask, causal=True, kernel=kernel))
    for t in (1, 7, 16):
        noise = 8.0 * jax.random.normal(jax.random.key(t), k.shape)
        later = (jnp.arange(24) >= t)[None, :, None, None]
        k2, v2, q2 = (jnp.where(later, x + noise, x) for x in (k, v, q))
        after = np.asarray(favor(q2, k2, v2, features, mask, causal=True, kernel=kernel))
        np.testing.assert_array_equal(after[:, :t], before[:, :t])
        assert np.abs(after[:, t:20] - before[:, t:20]).max() > 1e-3  # the future did change


@pytest.mark.parametrize("causal", [False, True])
def test_deterministic_features_are_lras_relu_linear_attention(causal):
    """LRA's generalized attention: φ = relu(x) + 0.001 on q and k themselves, no ω."""
    q, k, v = _qkv(n=12)
    mask = jnp.broadcast_to(jnp.arange(12) < 10, (2, 12))
    phi_q, phi_k = jax.nn.relu(q) + 1e-3, (jax.nn.relu(k) + 1e-3) * mask[:, :, None, None]
    scores = jnp.einsum("bnhm,bshm->bhns", phi_q, phi_k)
    if causal:
        scores = scores * jnp.tril(jnp.ones((12, 12)))
    expected = (
        jnp.einsum("bhns,bshk->bnhk", scores, v) / scores.sum(-1).transpose(0, 2, 1)[..., None]
    )
    out = favor(q, k, v, None, mask, causal=causal, kernel="relu")
    # both float32 ratios of positive sums: 2·(N + K + 6 = 26)·u·max|v| (<= 2) -> 6e-6
    np.testing.assert_allclose(out, expected, atol=1e-5)
    mixer = performer.PerformerAttention(
        heads=2,
        head_dim=8,
        max_len=12,
        kernel="relu",
        features_type="deterministic",
        rngs=nnx.Rngs(0),
    )
    assert mixer.features_for(q) is None and not nnx.state(mixer, performer.RandomFeatures)
    if not causal:  # the mixer (bidirectional, as in the encoder)
        np.testing.assert_allclose(mixer(q, k, v, mask), expected, atol=1e-5)


def test_deterministic_features_need_the_relu_kernel():
    with pytest.raises(ValueError, match=r"^performer.features_type: must be 'random' with kernel"):
        make_attention(
            "performer",
            8,
            2,
            max_len=8,
            options={"features_type": "deterministic"},
            rngs=nnx.Rngs(0),
        )
    with pytest.raises(ValueError, match=r"^kernel: must be 'relu' with deterministic"):
        performer.feature_map(jnp.ones((1, 2, 1, 4)), None, is_query=True)


def _plain_favor(q, k, v, features, mask, kernel):
    """Non-causal FAVOR+ as written in the paper (Eq. 3), differentiated by autodiff."""
    phi_q = feature_map(q, features, kernel=kernel, is_query=True)
    phi_k = feature_map(k, features, kernel=kernel, is_query=False, mask=mask)
    numerator = jnp.einsum("bnhm,bhmk->bnhk", phi_q, jnp.einsum("bnhm,bnhk->bhmk", phi_k, v))
    denominator = jnp.einsum("bnhm,bhm->bnh", phi_q, phi_k.sum(axis=1))
    return numerator / jnp.where(denominator > 0, denominator, 1.0)[..., None]


@pytest.mark.parametrize(
    ("kernel", "deterministic", "chunk"),
    [("softmax", False, 8), ("softmax", False, 64), ("relu", False, 8), ("relu", True, 16)],
)
def test_chunked_favor_equals_the_plain_formula_and_its_gradients(kernel, deterministic, chunk):
    """``favor.bidirectional`` (blocks of ``chunk`` tokens, N = 37 not a multiple of
    them, a padded batch row, the backward recomputing φ) against Eq. 3 by autodiff."""
    from lowrank_jax.attention import favor as chunked

    q, k, v = _qkv(n=37, scale=1.0)
    features = None if deterministic else random_features(jax.random.key(1), 16, 8)
    mask = jnp.arange(37)[None] < jnp.array([[37], [20]])
    cotangent = jax.random.normal(jax.random.key(2), q.shape)

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v) * cotangent)

    ours = jax.jit(lambda q, k, v: chunked.bidirectional(q, k, v, features, mask, kernel, chunk))
    plain = lambda q, k, v: _plain_favor(q, k, v, features, mask, kernel)  # noqa: E731
    # per-chunk shifts and sums against one product: 2·(N + M + K + 6 = 67)·u·max|v| (3.1)
    # plus u·|exponent| (<~ 10) per shift -> 3e-5
    np.testing.assert_allclose(ours(q, k, v), plain(q, k, v), atol=5e-5)
    for mine, theirs in zip(
        jax.jit(jax.grad(loss(ours), (0, 1, 2)))(q, k, v),
        jax.grad(loss(plain), (0, 1, 2))(q, k, v),
        strict=True,
    ):
        # sums of ~70 terms, Σ|terms| <~ 4·max|grad| (4): ~√70·u·16 = 8e-6 per path
        # rounding at random (worst case 70·u·16 = 7e-5)
        np.testing.assert_allclose(mine, theirs, atol=1e-4)
    if features is not None:  # ω is state, never trained: constant in the chunked path
        grad = jax.grad(lambda w: jnp.sum(chunked.bidirectional(q, k, v, w, mask, kernel, chunk)))
        assert not np.any(grad(features))


def test_chunked_favor_backward_keeps_no_features():
    """The fwd + bwd program's footprint (the benchmarks' target 4 memory). Autodiff
    keeps φ(q), φ(k) and their exponents ([B, N, H, M], 4 MiB each here); the chunked
    backward recomputes them a block at a time."""
    from lowrank_jax.attention import favor as chunked
    from lowrank_jax.bench import compiled_bytes

    q, k, v = _qkv(n=4096, k=16)
    features = random_features(jax.random.key(1), 64, 16)

    def footprint(fn):
        grad = jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v)), (0, 1, 2))
        return compiled_bytes(jax.jit(grad).lower(q, k, v).compile())

    plain = footprint(lambda q, k, v: _plain_favor(q, k, v, features, None, "softmax"))
    ours = footprint(lambda q, k, v: chunked.bidirectional(q, k, v, features, chunk=256))
    arrays = 6 * q.nbytes  # q, k, v and their gradients
    assert ours - arrays < 0.35 * (plain - arrays), (ours, plain, arrays)  # 0.23 measured


def test_chunked_favor_masked_keys_far_above_the_real_ones_give_finite_gradients():
    """Padded keys (zeros, exponent 0) can lie far above long real keys' maximum
    exponent; exp(0 − shift) · 0 must not become inf · 0 = NaN in the backward."""
    from lowrank_jax.attention import favor as chunked

    q, k, v = _qkv(n=4, k=8)
    k = k.at[:, :2].multiply(40.0).at[:, 2:].set(0.0)  # two long real keys, two padded
    mask = jnp.array([[True, True, False, False]] * 2)
    features = random_features(jax.random.key(1), 16, 8)
    grads = jax.grad(
        lambda q, k, v: jnp.sum(chunked.bidirectional(q, k, v, features, mask, chunk=2)),
        (0, 1, 2),
    )(q, k, v)
    assert all(np.isfinite(g).all() for g in grads)


def test_favor_checks_its_options_on_both_paths():
    q, k, v = _qkv(n=4)
    for causal in (False, True):
        with pytest.raises(ValueError, match=r"^kernel: must be one of"):
            performer.favor(q, k, v, None, kernel="Softmax", causal=causal)
        with pytest.raises(ValueError, match=r"^kernel: must be 'relu' with deterministic"):
            performer.favor(q, k, v, None, kernel="softmax", causal=causal)


def test_causal_favor_with_padded_keys_is_finite_everywhere():
    """Padded positions (at the end) must not turn the prefix sums into NaN."""
    q, k, v = _qkv(n=6)
    mask = jnp.array([[True] * 6, [True] * 3 + [False] * 3])
    features = random_features(jax.random.key(1), 16, 8)
    out = favor(q, k, v, features, mask, causal=True)
    assert np.isfinite(out).all()
    grads = jax.grad(
        lambda q, k, v: jnp.sum(performer.favor(q, k, v, features, mask, causal=True)), (0, 1, 2)
    )(q, k, v)
    assert all(np.isfinite(g).all() for g in grads)
