"""Model selection on validation: the best-validation checkpoint is the one scored on test."""

import numpy as np
import pytest

from lowrank_jax import data
from lowrank_jax.config import load_config
from lowrank_jax.train.state import load_model
from lowrank_jax.train.trainer import train_and_evaluate

TINY = "configs/tiny.py:runlocal"
SWITCH = 60  # from this step on, the training labels are wrong (shifted by one class)


def _accuracy(model, config) -> float:
    """The model's accuracy over the whole test split, computed here, independently."""
    hits = count = 0.0
    batches = data.whole_split(config.data, split="test", batch_size=64, rows=np.arange(64))
    for batch in batches:
        predicted = np.asarray(model(batch["tokens"], batch["mask"])).argmax(-1)
        hits += float(((predicted == batch["label"]) * batch["weight"]).sum())
        count += float(batch["weight"].sum())
    return hits / count


@pytest.fixture
def peaked(tmp_path, monkeypatch):
    """A run whose validation accuracy peaks mid-run: its labels go wrong at step SWITCH."""
    make_source = data.make_source

    class Spoiled:
        def __init__(self, source, classes):
            self.source, self.classes = source, classes

        def __next__(self):
            batch = next(self.source)
            if self.source.step > SWITCH:
                batch = {**batch, "label": (batch["label"] + 1) % self.classes}
            return batch

        def get_state(self):
            return self.source.get_state()

        def set_state(self, state):
            self.source.set_state(state)

    def spoiled(config, *, split, **kwargs):
        source = make_source(config, split=split, **kwargs)
        return Spoiled(source, config.num_classes) if split == "train" else source

    monkeypatch.setattr(data, "make_source", spoiled)
    config = load_config(TINY)
    config.train.update(steps=2 * SWITCH, eval_every=20, checkpoint_every=40, peak_flops=1e12)
    return config, train_and_evaluate(config, tmp_path / "run"), tmp_path / "run"


def test_test_accuracy_is_the_best_validation_checkpoints(peaked):
    config, summary, workdir = peaked
    assert summary["best_step"] < config.train.steps  # the peak came before the end
    assert summary["best_val_accuracy"] > summary["final_val_accuracy"] + 0.1
    assert summary["best_params_sha256"] != summary["params_sha256"]
    best, final = load_model(workdir), load_model(workdir, which="final")
    # k/64 is exact in float32 and float64: abs 1e-6 (< 1/64) demands the same predictions
    assert summary["test_accuracy"] == pytest.approx(_accuracy(best, config), abs=1e-6)
    assert summary["final_test_accuracy"] == pytest.approx(_accuracy(final, config), abs=1e-6)
    assert summary["test_accuracy"] > summary["final_test_accuracy"] + 0.1
    for alias in ("final_eval_accuracy", "best_eval_accuracy", "final_train_eval_accuracy"):
        assert alias not in summary  # the old keys are gone: no validation figure under "eval"


def test_a_rerun_of_the_finished_run_keeps_its_selection(peaked):
    config, summary, workdir = peaked
    assert train_and_evaluate(config, workdir) == summary
