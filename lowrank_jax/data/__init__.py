"""Datasets, by name (``config.data.name``).

A dataset module offers ``validate(data_config)`` and a source class built as
``Source(data_config, split=, batch_size=, rows=, seed=)``: an iterator over
this process's ``rows`` of each global batch (dicts of ``tokens`` int [b, N],
``mask`` bool [b, N], ``label`` int [b]) with ``get_state()`` / ``set_state()``
so that checkpoints carry the iterator position.
"""

from __future__ import annotations

import numpy as np

from lowrank_jax.data import synthetic

DATASETS = {"synthetic": (synthetic.validate, synthetic.SyntheticSource)}


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
