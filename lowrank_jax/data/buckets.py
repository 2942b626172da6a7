"""Length buckets: each batch padded only to the smallest of a few lengths that fits it.

``config.data.buckets`` (e.g. ``(16, 32, 64)``; empty = every batch at
``data.max_len``, the default) lists the lengths a batch may take, with
``data.max_len`` always the last. A batch keeps its examples and their order
(the same batches as without buckets); only the padding columns past its
longest example's bucket are dropped. So the padding a step computes on is
bounded, and the jitted step traces at most once per bucket: a handful of
static shapes, where padding each batch to its own longest example (what
PyTorch peers do) would compile once per distinct length.

With several processes, each holding its rows of a global batch, the processes
agree on the batch's longest example (one small all-gather per batch) so that
every process builds the same shape.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from lowrank_jax.config import fail


def check(cfg) -> tuple[int, ...]:
    """``data.buckets`` as a tuple: increasing integers in [1, data.max_len], else fail."""
    buckets = cfg.get("buckets", ()) or ()
    must = f"increasing integers in [1, data.max_len = {cfg.max_len}], e.g. (16, 32, 64)"
    if not isinstance(buckets, Sequence) or isinstance(buckets, str):
        fail("data.buckets", must, buckets)
    for i, length in enumerate(buckets):
        bad = isinstance(length, bool) or not isinstance(length, int)
        if bad or not 1 <= length <= cfg.max_len or (i and length <= buckets[i - 1]):
            fail("data.buckets", must, tuple(buckets))
    return tuple(buckets)


def length_of(longest: int, buckets: Sequence[int], max_len: int) -> int:
    """The smallest bucket that holds ``longest`` tokens (``max_len`` when none does).

    Example:
      >>> length_of(20, (16, 32, 64), 128), length_of(100, (16, 32, 64), 128)
      (32, 128)
    """
    return next((b for b in buckets if b >= longest), max_len)


def trim(batch: dict[str, np.ndarray], buckets: Sequence[int], max_len: int) -> dict:
    """``batch`` (padded to ``max_len``) cut to the bucket of its longest example.

    Every process of a multi-process run must call it for the same batch (it
    agrees on the longest example across processes).
    """
    longest = int(batch["mask"].sum(axis=-1).max(initial=0))
    if jax.process_count() > 1:
        longest = int(np.max(multihost_utils.process_allgather(np.int32(longest))))
    length = length_of(longest, buckets, max_len)
    return {
        key: value[:, :length] if key in ("tokens", "mask") else value
        for key, value in batch.items()
    }


class Bucketed:
    """A source whose batches are trimmed to their buckets (its state is the source's)."""

    def __init__(self, source, buckets: Sequence[int], max_len: int):
        self.source, self.buckets, self.max_len = source, tuple(buckets), max_len

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return trim(next(self.source), self.buckets, self.max_len)

    def get_state(self) -> dict:
        return self.source.get_state()

    def set_state(self, state: dict) -> None:
        self.source.set_state(state)
