"""Every config file validates, and a quick form of each trains a few steps (the CI form)."""

from pathlib import Path

import pytest

from lowrank_jax.config import load_module
from lowrank_jax.data import fashion_mnist
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


def test_demo_sweeps_lora_ranks_on_trec_and_every_point_validates():
    from lowrank_jax.sweep import apply_point, with_seeds

    module = load_module(CONFIGS / "demo.py")
    points = with_seeds(module.get_sweep(), 3)
    assert [(p["model.lora.rank"], p["seed"]) for p in points[:3]] == [(1, 0), (1, 1), (1, 2)]
    assert sorted({p["model.lora.rank"] for p in points}) == [1, 4, 32]
    for point in points:
        config = apply_point(module.get_config(), point)
        model = validate(config)
        assert config.data.name == "trec" and model.lora.alpha == 2 * model.lora.rank
        assert config.train.trainable == r".*lora_[ab]|.*magnitude|head\..*"  # LoRA and the head


def test_listops_quick(tmp_path, tiny_listops, quick_train):
    config = load("listops", "runlocal")
    config.data.update(data_dir=str(tmp_path / "tfds"), max_len=64)
    config.model.max_len = 64
    quick_train(config, tmp_path / "run")


def test_text_quick(tmp_path, quick_train):
    config = load("text", "task=trec,runlocal")
    config.data.data_dir = str(tmp_path / "tfds")
    quick_train(config, tmp_path / "run")


def test_fashion_mnist_quick(tmp_path, tiny_fashion_mnist, quick_train):
    # the Debian files' counts are tested in tests/data; here a tiny folder of the same layout
    config = load("fashion_mnist", "runlocal")
    config.data.update(data_dir=str(tmp_path / "tfds"), source_dir=str(tiny_fashion_mnist))
    quick_train(config, tmp_path / "run", steps=2)
