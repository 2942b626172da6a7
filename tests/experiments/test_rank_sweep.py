import csv
import math
from pathlib import Path

import ml_collections
import pytest

from lowrank_jax import build
from lowrank_jax.config import load_module
from lowrank_jax.sweeps.report import label
from lowrank_jax.train.metrics import read_json, read_jsonl
from lowrank_jax.train.state import params_sha256

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
    assert [(r["status"], r["ffn_rank"], r["qkv_rank"]) for r in rows] == [
        ("done", None, None),
        ("done", 2, None),
    ]
    # what the sweep is for: accuracies of the selected model on train and test, and the gap
    accuracies = ("train_accuracy", "val_accuracy", "test_accuracy", "final_test_accuracy")
    for row in rows:
        assert all(0 <= row[key] <= 1 for key in accuracies), row
        assert row["train_test_gap"] == row["train_accuracy"] - row["test_accuracy"]
        assert row["params_trainable"] == row["params_total"] and row["median_step_time_s"] > 0
    # both FFN denses of every layer, D x F each, become R x (D + F) factors (and keep biases)
    config = load_module(CONFIGS / "rank_sweep.py").get_config("dataset=fashion_mnist")
    d, f, layers = config.model.dim, config.model.ffn.dim, config.model.num_layers
    dense, low = rows
    assert dense["params_total"] - low["params_total"] == layers * 2 * (d * f - 2 * (d + f))
    # results.csv holds the same rows
    with open(tmp_path / "sweep" / "results.csv") as file:
        table = list(csv.DictReader(file))
    assert [(r["ffn_rank"], int(r["params_total"]), r["n"]) for r in table] == [
        ("", dense["params_total"], "1"),
        ("2", low["params_total"], "1"),
    ]
    assert [float(r["test_accuracy"]) for r in table] == [r["test_accuracy"] for r in rows]
    # each run trained: 2 logged steps of finite loss and non-zero gradient, and its final
    # parameters are not the ones it started from (random pixels: no accuracy to expect)
    for row in rows:
        run = tmp_path / "sweep" / row["name"]
        logged = [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]
        assert [r["step"] for r in logged] == [1, 2]
        assert all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in logged)
        run_config = ml_collections.ConfigDict(read_json(run / "config.json"))
        start = build.model(run_config.model, rngs=build.run_rngs(run_config.seed))
        assert read_json(run / "summary.json")["params_sha256"] != params_sha256(start)
