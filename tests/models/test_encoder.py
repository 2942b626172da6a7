import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lowrank_jax import build
from lowrank_jax.attention import ATTENTION
from lowrank_jax.attention.linformer import LinformerAttention
from lowrank_jax.attention.performer import PerformerAttention
from lowrank_jax.attention.softmax import SoftmaxAttention
from lowrank_jax.layers import DENSE, FactorizedDense, LoRA
from lowrank_jax.models import build_encoder, default_config
from lowrank_jax.surgery import apply_lora, count_params


def tiny(**changes):
    cfg = default_config()
    cfg.update(vocab_size=20, num_classes=3, max_len=8, dim=16, heads=2, num_layers=2)
    cfg.ffn.dim = 32
    cfg.attention.linformer.proj_len = 4
    cfg.attention.performer.num_features = 8
    for key, value in changes.items():
        node = cfg
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return cfg


def _tokens(batch=2, length=8, seed=0):
    return jax.random.randint(jax.random.key(seed), (batch, length), 1, 20)


@pytest.mark.parametrize("dense", sorted(DENSE))
@pytest.mark.parametrize("kind", sorted(ATTENTION))
def test_shapes_for_every_attention_and_dense_with_and_without_lora(kind, dense):
    cfg = tiny(**{"attention.kind": kind, "attention.dense.kind": dense, "attention.dense.rank": 2})
    model = build_encoder(cfg, rngs=nnx.Rngs(0))
    tokens, mask = _tokens(), jnp.ones((2, 8), bool)
    assert model(tokens, mask).shape == (2, 3)
    assert model.encode(tokens, mask).shape == (2, 8, 16)
    apply_lora(model, r"layers\.\d+\.attention\.(query|value)", rank=2, rngs=nnx.Rngs(1))
    assert isinstance(model.layers[1].attention.value, LoRA)
    expected = FactorizedDense if dense == "factorized" else nnx.Linear
    assert isinstance(model.layers[1].attention.value.base, expected)
    assert model(tokens, mask).shape == (2, 3)


def test_jitted_forward_traces_once():
    model = build_encoder(tiny(**{"attention.kind": "performer"}), rngs=nnx.Rngs(0))
    model.eval()

    @nnx.jit
    @chex.assert_max_traces(n=1)
    def forward(model, tokens, mask):
        return model(tokens, mask)

    mask = jnp.ones((2, 8), bool)
    first = forward(model, _tokens(seed=0), mask)
    second = forward(model, _tokens(seed=1), mask.at[1, 5:].set(False))
    assert first.shape == second.shape == (2, 3)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("kind", sorted(ATTENTION))
def test_padding_tokens_change_nothing(kind, pooling):
    model = build_encoder(
        tiny(**{"attention.kind": kind, "pooling": pooling, "max_len": 12}), rngs=nnx.Rngs(0)
    )
    model.eval()
    tokens, mask = _tokens(), jnp.ones((2, 8), bool)
    padded = jnp.concatenate([tokens, jnp.full((2, 4), 7)], axis=1)
    padded_mask = jnp.concatenate([mask, jnp.zeros((2, 4), bool)], axis=1)
    # padding adds exact zeros (masked weights, features and pooling terms are 0), so only
    # the order of the real sums may change: ~116 terms a layer, 2 layers, Σ|terms| <~ 3
    # (after LayerNorm): 2·232·u·3 -> 8e-5 (u = 2^-24); a leaked pad token moves it O(0.1)
    np.testing.assert_allclose(model(padded, padded_mask), model(tokens, mask), atol=1e-4)
    np.testing.assert_allclose(
        model.encode(padded, padded_mask)[:, :8], model.encode(tokens, mask), atol=1e-4
    )


def test_per_layer_overrides():
    cfg = tiny(num_layers=3)
    cfg.overrides = {
        "0-1": {"attention": {"kind": "performer"}},
        "2": {"ffn": {"dense": {"kind": "factorized", "rank": 4}}},
    }
    model = build_encoder(cfg, rngs=nnx.Rngs(0))
    mixers = [type(layer.attention.mixer) for layer in model.layers]
    assert mixers == [PerformerAttention, PerformerAttention, SoftmaxAttention]
    assert isinstance(model.layers[2].ffn.up, FactorizedDense) and model.layers[2].ffn.up.rank == 4
    assert isinstance(model.layers[0].ffn.up, nnx.Linear)


def test_linformer_layerwise_shares_one_projection():
    model = build_encoder(
        tiny(**{"attention.kind": "linformer", "attention.linformer.sharing": "layerwise"}),
        rngs=nnx.Rngs(0),
    )
    first, second = (layer.attention.mixer for layer in model.layers)
    assert isinstance(first, LinformerAttention) and first.projections is second.projections
    alone = build_encoder(
        tiny(**{"attention.kind": "linformer", "attention.linformer.sharing": "kv"}),
        rngs=nnx.Rngs(0),
    )
    e_size = 4 * 9  # P x (max_len + CLS)
    assert count_params(alone)["total"] - count_params(model)["total"] == e_size


def test_config_of_the_readme_performer_factorized_ffn_lora():
    cfg = default_config()
    cfg.attention.kind = "performer"
    cfg.ffn.dense.kind, cfg.ffn.dense.rank = "factorized", 32
    cfg.lora.rank = 8
    model = build.model(cfg, rngs=nnx.Rngs(0))
    block = model.layers[0]
    assert isinstance(block.attention.mixer, PerformerAttention)
    assert isinstance(block.ffn.up, FactorizedDense) and block.ffn.up.rank == 32
    assert isinstance(block.attention.query, LoRA) and isinstance(block.attention.key, nnx.Linear)
    counts = count_params(model)
    assert counts["trainable"] == counts["lora"] == 2 * 2 * 8 * (64 + 64)


@pytest.mark.parametrize(
    "changes",
    [
        {"positions": "sinusoidal", "cls_token": False, "pooling": "mean"},
        {"norm": "post", "head_hidden": 8},
        {"dtype": "bfloat16"},
        {"adapters.bottleneck": 4},
    ],
)
def test_variants(changes):
    model = build.model(tiny(**changes), rngs=nnx.Rngs(0))
    logits = model(_tokens())
    assert logits.shape == (2, 3) and logits.dtype == jnp.float32
    assert bool(jnp.isfinite(logits).all())


def test_two_tower():
    model = build_encoder(tiny(two_tower=True), rngs=nnx.Rngs(0))
    pairs = jnp.stack([_tokens(seed=0), _tokens(seed=1)], axis=1)  # [B, 2, N]
    assert model(pairs, jnp.ones((2, 2, 8), bool)).shape == (2, 3)
    assert model.head.in_features == 4 * 16
    with pytest.raises(ValueError, match=r"two_tower input must be \[B, 2, N\]"):
        model(_tokens())


def test_every_parameter_carries_logical_axes():
    model = build_encoder(tiny(**{"attention.kind": "linformer"}), rngs=nnx.Rngs(0))
    for path, param in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        names = param.get_metadata().get("out_sharding")
        assert names is not None and len(names) == param.ndim, path
        if param.ndim == 2:  # every matrix names at least one axis the trainer can shard
            assert any(name is not None for name in names), path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"attention.kind": "flash"},
            "^model.attention.kind: must be one of linformer, performer, softmax, got 'flash'",
        ),
        (
            {"ffn.dense.kind": "lowrank"},
            "^model.ffn.dense.kind: must be one of dense, factorized, got 'lowrank'",
        ),
        (
            {"ffn.dense.kind": "factorized"},
            "^model.ffn.dense.rank: must be set: dense kind 'factorized' needs a rank",
        ),
        (
            {"ffn.dense.kind": "factorized", "ffn.dense.rank": 17},
            r"^model.ffn.dense.rank: must be an integer in \[1, 16\]",
        ),
        (
            {"ffn.dense.kind": "factorized", "ffn.dense.rank": 4, "ffn.dense.init": "svd"},
            "^model.ffn.dense.init: must be one of default, spectral, got 'svd'",
        ),
        (
            {"attention.dense.frobenius_decay": 0.1},
            "^model.attention.dense.frobenius_decay: must be 0.0 for dense kind 'dense'",
        ),
        ({"dim": 15}, "^model.dim: must be a multiple of heads = 2, got 15"),
        ({"pooling": "max"}, "^model.pooling: must be one of cls, mean, got 'max'"),
        ({"dropout": 1.0}, r"^model.dropout: must be a rate in \[0, 1\)"),
        (
            {"attention.kind": "performer", "attention.dropout": 0.1},
            "^model.attention.dropout: must be 0: .*no attention matrix",
        ),
        (
            {"attention.kind": "linformer", "attention.linformer.proj_len": 10},
            r"^model.attention.linformer.proj_len: must be an integer in \[1, 9\]",
        ),
    ],
)
def test_bad_config_names_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        build_encoder(tiny(**changes), rngs=nnx.Rngs(0))


def test_unknown_fields_and_bad_overrides():
    cfg = tiny()
    cfg.unknown_field = 3
    with pytest.raises(ValueError, match=r"model\.unknown_field: unknown field; valid: "):
        build_encoder(cfg, rngs=nnx.Rngs(0))
    for overrides, message in [
        (
            {"5": {"attention": {"kind": "performer"}}},
            r"^model.overrides\['5'\]: must be layers in \[0, 1\]",
        ),
        (
            {"0": {"attention": {"kin": "performer"}}},
            r"model.overrides\['0'\].attention.kin: unknown field",
        ),
        (
            {"0": {"attention": {"kind": "nope"}}},
            r"^model.overrides \(layer 0\).attention.kind: must be one of .*, got 'nope'",
        ),
    ]:
        cfg = tiny()
        cfg.overrides = overrides
        with pytest.raises(ValueError, match=message):
            build_encoder(cfg, rngs=nnx.Rngs(0))
