"""Every config file validates, and a quick form of each trains a few steps (the CI form)."""

import importlib.util
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from lowrank_jax.data import builders, fashion_mnist
from lowrank_jax.train.trainer import train_and_evaluate, validate

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def load(name: str, arg: str | None = None):
    spec = importlib.util.spec_from_file_location(f"config_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
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


class TinyListops(builders.ListopsSmall, skip_registration=True):
    SIZES: ClassVar[dict[str, int]] = {"train": 64, "validation": 16, "test": 16}
    MIN_LENGTH, MAX_LENGTH = 8, 64


def _quick(config, workdir, steps=3):
    config.train.update(
        steps=steps, log_every=1, eval_every=0, eval_batches=1, checkpoint_every=steps
    )
    config.train.peak_flops = 1e12
    summary = train_and_evaluate(config, workdir)
    assert summary["step_traces"] == 1 and np.isfinite(summary["final_train_loss"])
    return summary


def test_listops_quick(tmp_path, monkeypatch):
    monkeypatch.setitem(builders.BUILDERS, "listops_small", TinyListops)
    config = load("listops", "runlocal")
    config.data.update(data_dir=str(tmp_path / "tfds"), max_len=64)
    config.model.max_len = 64
    _quick(config, tmp_path / "run")


def test_text_quick(tmp_path):
    config = load("text", "task=trec,runlocal")
    config.data.data_dir = str(tmp_path / "tfds")
    _quick(config, tmp_path / "run")


def test_fashion_mnist_quick(tmp_path):
    # the Debian files' counts are tested in tests/data; here a tiny folder of the same layout
    rng = np.random.default_rng(0)
    source = tmp_path / "idx"
    source.mkdir()
    for split, n in (("train", 32), ("test", 16)):
        images, labels = fashion_mnist.FILES[split]
        fashion_mnist.write_idx(source / images, rng.integers(0, 256, (n, 28, 28)))
        fashion_mnist.write_idx(source / labels, np.arange(n) % 10)
    config = load("fashion_mnist", "runlocal")
    config.data.update(data_dir=str(tmp_path / "tfds"), source_dir=str(source))
    _quick(config, tmp_path / "run", steps=2)
