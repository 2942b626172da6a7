"""Every config file validates and builds the model it describes, and a quick form of each
trains a few steps (the CI form) in which the loss falls on a fixed batch."""

import itertools
from pathlib import Path

import pytest
from flax import nnx

from lowrank_jax import build, data, surgery
from lowrank_jax.attention import ATTENTION
from lowrank_jax.config import load_module
from lowrank_jax.data import fashion_mnist
from lowrank_jax.layers import FactorizedDense, LoRA
from lowrank_jax.train.metrics import read_jsonl
from lowrank_jax.train.trainer import validate

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def load(name: str, arg: str | None = None):
    module = load_module(CONFIGS / f"{name}.py")
    return module.get_config(arg)


HAS_FASHION = Path(fashion_mnist.DEFAULT_DIR).exists()


@pytest.mark.parametrize(
    ("name", "arg"),
    [
        ("tiny", None),
        ("tiny", "runlocal,attention=linformer,rank=8,lora=4"),
        ("listops", None),
        ("listops", "runlocal,attention=performer"),
        ("text", "task=trec"),
        ("demo", None),
        ("text", "task=sms_spam,tokenizer=minilm,runlocal"),
        pytest.param(
            "fashion_mnist",
            "runlocal",
            marks=pytest.mark.skipif(not HAS_FASHION, reason="no IDX files"),
        ),
    ],
)
def test_configs_validate(name, arg):
    config = load(name, arg)
    validate(config)
    assert config.model.max_len >= config.data.max_len
    if not config.model.pretrained:  # the demo's MiniLM: its points are tested below
        check_model(config, arg)


def _dense_params(size_in: int, size_out: int, rank: int | None) -> int:
    """A linear layer's parameters: W (or its R x (in + out) factors) and the bias."""
    return (rank * (size_in + size_out) if rank else size_in * size_out) + size_out


def expected_params(m) -> int:
    """The parameters of a from-scratch encoder config ``m``, counted by hand."""
    assert not (m.pretrained or m.overrides or m.two_tower or m.head_hidden), "not counted here"
    assert m.adapters.bottleneck == 0 and m.attention.linformer.sharing == "none"
    assert m.lora.variant == "lora" and not m.lora.rules, "not counted here"
    d, f, n = m.dim, m.ffn.dim, m.max_len + int(m.cls_token)

    def rank(dense):
        return dense.rank if dense.kind == "factorized" else None

    layer = 4 * _dense_params(d, d, rank(m.attention.dense))  # Q, K, V, output
    layer += _dense_params(d, f, rank(m.ffn.dense)) + _dense_params(f, d, rank(m.ffn.dense))
    layer += 2 * 2 * d  # two LayerNorms, scale and bias
    if m.attention.kind == "linformer":  # E and F, [H, P, N] each
        layer += 2 * m.heads * m.attention.linformer.proj_len * n
    layer += 2 * m.lora.rank * (d + d)  # LoRA's A and B on W_q and W_v (0 when off)
    embed = m.vocab_size * d + (n * d if m.positions == "learned" else 0) + d * m.cls_token
    final_norm = 2 * d  # after the last block (pre-LN) or on the embeddings (post-LN)
    return embed + m.num_layers * layer + final_norm + _dense_params(d, m.num_classes, None)


def check_model(config, arg: str | None) -> None:
    """The model ``config`` builds (on shapes) is the one it and its ``arg`` describe: every
    layer's attention kind, FFN rank and LoRA rank, its parameter count and what trains."""
    m = config.model
    asked = {"attention": "softmax", "rank": "0", "lora": "0"}  # config.MODEL_ARGS
    asked |= dict(item.split("=", 1) for item in (arg or "").split(",") if "=" in item)
    ffn_rank, lora_rank = int(asked["rank"]), int(asked["lora"])
    model = nnx.eval_shape(lambda: build.model(m, rngs=build.run_rngs(config.seed)))
    assert len(model.layers) == m.num_layers
    assert model.embed.embedding.shape == (m.vocab_size, m.dim)
    assert model.head.kernel.shape == (m.dim, m.num_classes)
    for layer in model.layers:
        attention, ffn = layer.attention, layer.ffn
        assert type(attention.mixer) is ATTENTION[asked["attention"]]
        if asked["attention"] == "performer":
            features = m.attention.performer.num_features
            assert attention.mixer.features.shape == (features, m.dim // m.heads)
        for dense, size in ((ffn.up, (m.dim, m.ffn.dim)), (ffn.down, (m.ffn.dim, m.dim))):
            if ffn_rank:
                assert type(dense) is FactorizedDense
                assert (dense.a.shape, dense.b.shape) == ((size[0], ffn_rank), (ffn_rank, size[1]))
            else:
                assert type(dense) is nnx.Linear and dense.kernel.shape == size
        for name in ("query", "key", "value", "out"):
            lora = lora_rank and name in ("query", "value")
            projection = getattr(attention, name)
            assert type(projection) is (LoRA if lora else nnx.Linear), name
            if lora:
                assert projection.lora_a.shape == (m.dim, lora_rank)
    counts = surgery.count_params(model, config.train.trainable)
    assert counts["total"] == expected_params(m)
    # "auto": the LoRA factors alone when there are any, else everything
    assert config.train.trainable == "auto"
    lora = m.num_layers * 2 * lora_rank * (m.dim + m.dim)
    assert counts["lora"] == lora and counts["trainable"] == (lora or counts["total"]) > 0


class _FirstBatch:
    """A train source that gives its first batch at every step (its state is the source's)."""

    def __init__(self, source):
        self.source, self.batch = source, None

    def __iter__(self):
        return self

    def __next__(self):
        if self.batch is None:
            self.batch = next(self.source)
        return self.batch

    def __getattr__(self, name):  # get_state, set_state
        return getattr(self.source, name)


@pytest.fixture
def one_batch_train(monkeypatch, quick_train):
    """``one_batch_train(config, workdir, steps=3) -> summary``: ``quick_train`` on the train
    split's first batch at every step, from the peak learning rate (no warm-up) and without
    dropout (the loss stays the same unless the model learns), checking that the loss falls
    at every step and that the trained model is the one the config describes."""
    make_source = data.make_source

    def first_batch(data_config, *, split, **kwargs):
        source = make_source(data_config, split=split, **kwargs)
        return _FirstBatch(source) if split == "train" else source

    monkeypatch.setattr(data, "make_source", first_batch)

    def run(config, workdir, steps=3) -> dict:
        check_model(config, None)
        config.train.warmup_steps, config.model.dropout = 0, 0.0
        summary = quick_train(config, workdir, steps=steps)
        losses = [r["loss"] for r in read_jsonl(workdir / "metrics.jsonl") if "loss" in r]
        assert len(losses) == steps, losses
        assert all(a > b for a, b in itertools.pairwise(losses)), losses  # it learns
        assert summary["params_total"] == expected_params(config.model)
        assert summary["params_trainable"] == summary["params_total"]  # no LoRA: all trains
        assert 0 <= summary["test_accuracy"] <= 1 and summary["test_loss"] > 0
        return summary

    return run


def test_demo_sweeps_lora_ranks_on_trec_and_every_point_validates():
    from lowrank_jax.sweeps.launch import apply_point, with_seeds

    module = load_module(CONFIGS / "demo.py")
    points = with_seeds(module.get_sweep(), 3)
    assert [(p["model.lora.rank"], p["seed"]) for p in points[:3]] == [(1, 0), (1, 1), (1, 2)]
    assert sorted({p["model.lora.rank"] for p in points}) == [1, 4, 32]
    for point in points:
        config = apply_point(module.get_config(), point)
        model = validate(config)
        assert config.data.name == "trec" and model.lora.alpha == 2 * model.lora.rank
        assert config.train.trainable == r".*lora_[ab]|.*magnitude|head\..*"  # LoRA and the head


def test_listops_quick(tmp_path, tiny_listops, one_batch_train):
    config = load("listops", "runlocal")
    config.data.update(data_dir=str(tmp_path / "tfds"), max_len=64)
    config.model.max_len = 64
    one_batch_train(config, tmp_path / "run")


def test_text_quick(tmp_path, one_batch_train):
    config = load("text", "task=trec,runlocal")
    config.data.data_dir = str(tmp_path / "tfds")
    one_batch_train(config, tmp_path / "run")


def test_fashion_mnist_quick(tmp_path, tiny_fashion_mnist, one_batch_train):
    # the Debian files' counts are tested in tests/data; here a tiny folder of the same layout
    config = load("fashion_mnist", "runlocal")
    config.data.update(data_dir=str(tmp_path / "tfds"), source_dir=str(tiny_fashion_mnist))
    one_batch_train(config, tmp_path / "run", steps=2)
