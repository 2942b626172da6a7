"""Evaluation of a run's state: exact means over examples, on any split.

The eval step returns sums weighted by each example's ``weight`` (1 real, 0
padding) and their ``count``; ``mean_metrics`` adds them up over batches and
divides once, so a whole split is scored over exactly its examples, whatever
the batch size. Three uses in the trainer:

- ``validation``: during training, the first ``train.eval_batches`` batches of
  the validation split in order (0: the whole split), for model selection;
- ``whole_split(..., "test")``: at the end, every test example once, for the
  selected (best-validation) and the final state;
- ``train_sample``: the selected model, in eval mode, on the first
  ``train.train_eval_batches`` batches of the run's training order (a fixed
  sample of examples it trained on), for the train side of the gap.
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import numpy as np

from lowrank_jax import data
from lowrank_jax.train import sharding


def mean_metrics(eval_step, state, batches: Iterable[dict], mesh, batch_size: int, prefix: str):
    """``{prefix_metric: mean over examples}`` of the eval step over ``batches``.

    ``batches`` hold this process's rows of global batches of ``batch_size``; a
    batch without ``weight`` counts every row.
    """
    outputs = []
    for batch in batches:
        rows = len(batch["label"])
        batch = {"weight": np.ones(rows, np.float32), **batch}
        outputs.append(eval_step(state, sharding.place_batch(batch, mesh, batch_size)))
    sums: dict[str, float] = {}
    for output in jax.device_get(outputs):  # one sync for all batches
        for key, value in output.items():
            sums[key] = sums.get(key, 0.0) + float(value)
    count = sums.pop("count")
    return {f"{prefix}_{key}": value / count for key, value in sums.items()}


def validation(eval_step, state, config, mesh, source) -> dict:
    """``val_*``: the first ``eval_batches`` validation batches (rewound), or the whole split."""
    if not config.train.eval_batches:
        return whole_split(eval_step, state, config, mesh, "validation", prefix="val")
    source.set_state({"step": 0})  # every evaluation reads the same batches
    batches = [next(source) for _ in range(config.train.eval_batches)]
    return mean_metrics(eval_step, state, batches, mesh, config.train.batch_size, "val")


def whole_split(eval_step, state, config, mesh, split: str, prefix: str) -> dict:
    """``prefix_*`` over every example of ``split`` once."""
    batch_size = config.train.batch_size
    rows = sharding.local_rows(mesh, batch_size)
    batches = data.whole_split(config.data, split=split, batch_size=batch_size, rows=rows)
    return mean_metrics(eval_step, state, batches, mesh, batch_size, prefix)


def train_sample(eval_step, state, config, mesh, prefix: str = "train_eval") -> dict:
    """``<prefix>_*``: the first ``train_eval_batches`` batches of the training order."""
    batch_size = config.train.batch_size
    rows = sharding.local_rows(mesh, batch_size)
    source = data.make_source(
        config.data, split="train", batch_size=batch_size, rows=rows, seed=config.seed
    )
    batches = [next(source) for _ in range(config.train.train_eval_batches)]
    return mean_metrics(eval_step, state, batches, mesh, batch_size, prefix)
