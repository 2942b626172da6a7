"""Datasets, by name (``config.data.name``).

A dataset module offers ``validate(data_config)`` and a source class built as
``Source(data_config, split=, batch_size=, rows=, seed=)``: an iterator over
this process's ``rows`` of each global batch (dicts of ``tokens`` int [b, N],
``mask`` bool [b, N], ``label`` int [b]) with ``get_state()`` / ``set_state()``
so that checkpoints carry the iterator position.
"""

from __future__ import annotations

import numpy as np

from lowrank_jax.data import listops, pipeline, synthetic


def _validate_listops(cfg) -> None:
    if cfg.max_len < 2:
        raise ValueError(f"data.max_len: must be at least 2, got {cfg.max_len}")
    if cfg.eval_split not in ("validation", "test"):
        raise ValueError(f"data.eval_split: must be validation or test, got {cfg.eval_split!r}")


DATASETS = {
    "synthetic": (synthetic.validate, synthetic.SyntheticSource),
    "listops": (_validate_listops, pipeline.GrainSource),
    "listops_small": (_validate_listops, pipeline.GrainSource),
}
VOCAB_SIZES = {"listops": len(listops.VOCAB), "listops_small": len(listops.VOCAB)}


def check(data_config) -> None:
    """Raise ``ValueError`` naming the field if ``config.data`` is unusable."""
    if data_config.name not in DATASETS:
        raise ValueError(
            f"data.name: unknown dataset {data_config.name!r}; valid: {', '.join(sorted(DATASETS))}"
        )
    DATASETS[data_config.name][0](data_config)


def make_source(data_config, *, split: str, batch_size: int, rows: np.ndarray, seed: int):
    """This process's iterator over ``split`` (see the module docstring)."""
    return DATASETS[data_config.name][1](
        data_config, split=split, batch_size=batch_size, rows=rows, seed=seed
    )
