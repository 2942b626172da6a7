from pathlib import Path

import pytest

from lowrank_jax.config import load_module
from lowrank_jax.report import label

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_listops_quick_form_sweeps_qkv_ranks(tmp_path, tiny_listops, quick_sweep):
    rows = quick_sweep(
        "rank_sweep.py",
        "dataset=listops,ranks=none,qkv_ranks=16",  # FFN ranks: test_listops.py
        data={"data_dir": str(tmp_path / "tfds"), "max_len": 64},
        model={"max_len": 64},
    )
    assert [label(r) for r in rows] == ["softmax, dense", "softmax, qkv R=16"]
    dense, low = rows
    assert all(0 <= row["train_accuracy"] <= 1 for row in rows)
    # the Q/K/V/output projections of every layer, D x D each, become R x (D + D) factors
    config = load_module(CONFIGS / "rank_sweep.py").get_config("dataset=listops")
    d, layers = config.model.dim, config.model.num_layers
    saved = layers * 4 * (d * d - 16 * (d + d))
    assert dense["params_total"] - low["params_total"] == saved


@pytest.mark.slow  # a long quick form (DEVELOPERS.md)
def test_fashion_mnist_quick_form(tmp_path, tiny_fashion_mnist, quick_sweep):
    rows = quick_sweep(
        "rank_sweep.py",
        "dataset=fashion_mnist,ranks=2,qkv_ranks=none",
        data={"data_dir": str(tmp_path / "tfds"), "source_dir": str(tiny_fashion_mnist)},
    )
    assert [label(r) for r in rows] == ["softmax, dense", "softmax, R=2"]
