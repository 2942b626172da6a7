import sys
from pathlib import Path
from typing import ClassVar

import ml_collections
import numpy as np
import pytest

from lowrank_jax import cli
from lowrank_jax.data import builders, listops, make_source, pipeline

ROOT = Path(__file__).resolve().parents[2]


class TinyListops(builders.ListopsSmall, skip_registration=True):
    """The ListOps builder at test size."""

    SIZES: ClassVar[dict[str, int]] = {"train": 40, "validation": 8, "test": 8}
    MIN_LENGTH, MAX_LENGTH = 8, 64


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture
def tiny(monkeypatch, data_dir):
    monkeypatch.setitem(builders.BUILDERS, "listops_small", TinyListops)
    return ml_collections.ConfigDict({"name": "listops_small", "data_dir": data_dir, "max_len": 48})


def test_builder_counts_labels_and_reuse(tiny, data_dir):
    splits = pipeline.data_source("listops_small", data_dir)
    assert {name: len(split) for name, split in splits.items()} == TinyListops.SIZES
    record = splits["train"][0]
    assert listops.evaluate(record["source"].decode()) == record["label"]
    sources = [splits[s][i]["source"] for s in splits for i in range(len(splits[s]))]
    assert len(set(sources)) == len(sources)  # de-duplicated across splits
    labels = [splits["train"][i]["label"] for i in range(40)]
    assert len(set(labels)) >= 4  # several classes, not one
    again = pipeline.data_source("listops_small", data_dir)  # prepared once, reused
    assert again["train"][0] == record


def test_batches_shapes_masks_padding(tiny):
    source = make_source(tiny, split="train", batch_size=4, rows=np.arange(4), seed=0)
    batch = next(source)
    assert batch["tokens"].shape == batch["mask"].shape == (4, 48) and batch["label"].shape == (4,)
    assert batch["tokens"].dtype == np.int32 and batch["mask"].dtype == bool
    assert (batch["tokens"][~batch["mask"]] == 0).all() and (
        batch["tokens"][batch["mask"]] > 0
    ).all()
    for tokens, mask, label in zip(batch["tokens"], batch["mask"], batch["label"], strict=True):
        source_text = " ".join(listops.VOCAB[t] for t in tokens[mask])
        if mask.all():  # truncated: the value of the prefix is undefined
            continue
        assert listops.evaluate(source_text) == label


def test_identical_batches_for_seeds_and_after_restore(tiny):
    def batches(seed, n=5):
        source = make_source(tiny, split="train", batch_size=4, rows=np.arange(4), seed=seed)
        return source, [next(source)["tokens"] for _ in range(n)]

    _, first = batches(0)
    source, second = batches(0)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert source.ahead > 0  # training batches are read ahead, the same as looked up
    for i, tokens in enumerate(second):
        np.testing.assert_array_equal(tokens, source.batches[i]["tokens"])
    _, other = batches(1)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    # 40 examples / 4 = 10 batches an epoch: step 12 is in the second, reshuffled, epoch
    source.set_state({"step": 12})
    twelfth = next(source)["tokens"]
    restored = make_source(tiny, split="train", batch_size=4, rows=np.arange(4), seed=0)
    restored.set_state(source.get_state())
    np.testing.assert_array_equal(next(restored)["tokens"], next(source)["tokens"])
    assert twelfth.shape == (4, 48)


@pytest.mark.parametrize("split", ["validation", "test"])
def test_evaluation_splits_are_read_in_order(tiny, split):
    source = make_source(tiny, split=split, batch_size=4, rows=np.arange(4), seed=0)
    other_seed = make_source(tiny, split=split, batch_size=4, rows=np.arange(4), seed=7)
    np.testing.assert_array_equal(next(source)["tokens"], next(other_seed)["tokens"])


def test_whole_split_scores_every_example_once(tiny):
    """8 test examples in global batches of 6 split over two processes' rows."""
    from lowrank_jax import data

    size, example = pipeline.split_examples(tiny, "test")
    assert size == TinyListops.SIZES["test"] == 8
    seen = []
    for rows in (np.arange(0, 3), np.arange(3, 6)):  # two processes, three rows each
        batches = list(data.whole_split(tiny, split="test", batch_size=6, rows=rows))
        assert len(batches) == 2  # ceil(8 / 6): the same count on every process
        for number, batch in enumerate(batches):
            for row, weight, tokens in zip(rows, batch["weight"], batch["tokens"], strict=True):
                index = number * 6 + row
                assert weight == float(index < size)
                if weight:
                    seen.append(index)
                    np.testing.assert_array_equal(tokens, example(index)["tokens"])
    assert sorted(seen) == list(range(8))


def _prepared(data_dir) -> Path:
    return Path(data_dir) / TinyListops.name / str(TinyListops.VERSION)


def _truncate(folder):
    path = next(folder.glob("*-train.array_record-*"))
    path.write_bytes(path.read_bytes()[:-100])


def _flip(folder):
    path = next(folder.glob("*-train.array_record-*"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _delete(folder):
    next(folder.glob("*-test.array_record-*")).unlink()


def _garbage_info(folder):
    (folder / "dataset_info.json").write_text("garbage{")


@pytest.mark.parametrize("damage", [_truncate, _flip, _delete, _garbage_info])
def test_a_damaged_prepared_dataset_is_rebuilt_in_one_line(monkeypatch, tmp_path, capfd, damage):
    monkeypatch.setitem(builders.BUILDERS, "listops_small", TinyListops)
    data_dir = str(tmp_path)
    first = pipeline.data_source("listops_small", data_dir)
    folder = _prepared(data_dir)
    assert (folder / pipeline.CHECKSUMS).is_file()
    records = [first["train"][i] for i in range(len(first["train"]))]
    damage(folder)
    capfd.readouterr()
    again = pipeline.data_source("listops_small", data_dir)
    (line,) = [x for x in capfd.readouterr().err.splitlines() if x.startswith("warning")]
    assert line.startswith(f"warning: the prepared listops_small data in {folder} is damaged (")
    assert line.endswith("); rebuilding it")
    assert [again["train"][i] for i in range(len(again["train"]))] == records  # seeded: the same
    assert pipeline._damage(folder) is None


def test_a_dataset_without_checksums_that_does_not_read_is_one_line(monkeypatch, tmp_path, capsys):
    """Prepared by an older version (no checksums), then damaged: the folder and the fix."""
    monkeypatch.setitem(builders.BUILDERS, "listops_small", TinyListops)
    pipeline.data_source("listops_small", str(tmp_path))
    folder = _prepared(tmp_path)
    (folder / pipeline.CHECKSUMS).unlink()
    _garbage_info(folder)
    workdir = tmp_path / "run"
    argv = [
        "train",
        "--config",
        f"{ROOT}/configs/listops.py:runlocal",
        "--workdir",
        str(workdir),
        f"--config.data.data_dir={tmp_path}",
    ]
    monkeypatch.setattr(sys, "argv", ["lowrank-jax", *argv])
    capsys.readouterr()
    assert cli.main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: data.name: the prepared listops_small data in {folder} does")
    assert line.endswith(f"rebuild it: rm -r {folder} and run again")
    assert not workdir.exists()  # before the workdir
