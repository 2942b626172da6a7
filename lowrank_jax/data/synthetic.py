"""A small synthetic classification task for tests and smoke runs.

Each example is a sequence of random tokens of random length; its label is the
class token (ids 1..C) that occurs most often (ties go to the smallest id).
Solving it needs counting across the whole sequence, so it exercises
attention and pooling, and a tiny encoder learns it in a few hundred steps.

Batches are a pure function of (seed, split, step): the iterator's state is just
the next step, so a resumed run sees exactly the batches it would have seen,
and every process can cut its own rows of the same global batch. Training
batches follow the run's seed; validation and test are fixed (seed 0), the
same for every run, and as whole splits have ``SPLIT_SIZE`` examples.
"""

from __future__ import annotations

import numpy as np

from lowrank_jax.config import check_int, require

PAD = 0
OFFSETS = {"train": 0, "validation": 1, "test": 2}
SPLIT_SIZE = 1024  # examples of the whole validation / test split (``split_examples``)


def make_batch(seed: int, split: str, step: int, batch_size: int, cfg) -> dict[str, np.ndarray]:
    """The global batch number ``step`` of ``split``: tokens, mask [B, N], label [B]."""
    rng = np.random.default_rng([seed, OFFSETS[split], step])
    length, classes = cfg.max_len, cfg.num_classes
    lengths = rng.integers(cfg.min_len, length + 1, size=batch_size)
    mask = np.arange(length)[None, :] < lengths[:, None]
    # Class tokens 1..C are a third of the draws; the rest are filler ids above C.
    is_class = rng.random((batch_size, length)) < 1 / 3
    class_ids = rng.integers(1, classes + 1, size=(batch_size, length))
    filler = rng.integers(classes + 1, cfg.vocab_size, size=(batch_size, length))
    tokens = np.where(mask, np.where(is_class, class_ids, filler), PAD).astype(np.int32)
    counts = np.stack([((tokens == c) & mask).sum(1) for c in range(1, classes + 1)], axis=1)
    return {"tokens": tokens, "mask": mask, "label": counts.argmax(1).astype(np.int32)}


class SyntheticSource:
    """Iterator over this process's rows of the global batches, from a step on."""

    def __init__(self, cfg, *, split: str, batch_size: int, rows: np.ndarray, seed: int):
        self.cfg, self.split, self.batch_size, self.rows = cfg, split, batch_size, rows
        self.seed = seed if split == "train" else 0
        self.step = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = make_batch(self.seed, self.split, self.step, self.batch_size, self.cfg)
        self.step += 1
        return {key: value[self.rows] for key, value in batch.items()}

    def get_state(self) -> dict:
        return {"step": self.step}

    def set_state(self, state: dict) -> None:
        self.step = int(state["step"])


def split_examples(cfg, split: str):
    """``(size, example(i))`` of the fixed validation or test split."""
    batch = make_batch(0, split, 0, SPLIT_SIZE, cfg)
    return SPLIT_SIZE, lambda index: {key: value[index] for key, value in batch.items()}


def validate(cfg) -> None:
    """Check the ``config.data`` fields of the synthetic task."""
    require(cfg, ("vocab_size", "num_classes", "max_len", "min_len"), "data")
    check_int(cfg.vocab_size, "data.vocab_size", low=4)
    check_int(cfg.max_len, "data.max_len")
    check_int(
        cfg.num_classes,
        "data.num_classes",
        low=2,
        high=cfg.vocab_size - 2,
        why="data.vocab_size - 2",
    )
    check_int(cfg.min_len, "data.min_len", high=cfg.max_len, why="data.max_len")
