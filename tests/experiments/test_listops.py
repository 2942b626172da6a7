from pathlib import Path

import pytest

from lowrank_jax.config import load_module
from lowrank_jax.sweeps.launch import apply_point
from lowrank_jax.sweeps.report import label
from lowrank_jax.train.trainer import validate

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "listops.py"
TRAINED = {"softmax, dense", "linformer, R=16", "performer, dense"}  # every kind, both FFNs


def test_every_point_validates():
    module = load_module(CONFIG)
    points = module.get_sweep("runlocal")
    assert len(points) == 6
    for point in points:
        validate(apply_point(module.get_config("runlocal"), point))


@pytest.mark.slow  # a long quick form (DEVELOPERS.md)
def test_quick_form_trains_and_reports(tmp_path, tiny_listops, quick_sweep):
    def keep(point):
        rank = point.get("model.ffn.dense.rank")
        return f"{point['model.attention.kind']}, {f'R={rank}' if rank else 'dense'}" in TRAINED

    rows = quick_sweep(
        "listops.py",
        "runlocal",
        data={"data_dir": str(tmp_path / "tfds"), "max_len": 64},
        model={"max_len": 64},
        keep=keep,
    )
    assert [r["status"] for r in rows] == ["done"] * 3
    assert {label(r) for r in rows} == TRAINED
    # the train/test gap comes from an evaluation of the selected model on training batches
    for row in rows:
        assert 0 <= row["train_accuracy"] <= 1 and 0 <= row["test_accuracy"] <= 1
        assert row["train_test_gap"] == row["train_accuracy"] - row["test_accuracy"]
    by = {label(r): r for r in rows}
    assert by["linformer, R=16"]["params_total"] > by["softmax, dense"]["params_total"]


@pytest.mark.slow  # a long quick form (DEVELOPERS.md)
def test_lra_settings_points_validate_and_the_lra_performer_trains(
    tmp_path, tiny_listops, quick_sweep
):
    module = load_module(CONFIG)
    points = module.get_sweep("runlocal,lra_settings")
    assert module.LRA_PERFORMER in points and module.LRA_LINFORMER in points and len(points) == 5
    for point in points:
        config = apply_point(module.get_config("runlocal,lra_settings"), point)
        validate(config)
    mixer = config.model.attention.performer  # ours: the runlocal defaults
    assert (mixer.num_features, mixer.redraw) == (64, "fixed")
    rows = quick_sweep(
        "listops.py",
        "runlocal,lra_settings",
        data={"data_dir": str(tmp_path / "tfds"), "max_len": 64},
        model={"max_len": 64},
        keep=lambda point: point in (module.LRA_PERFORMER, module.LRA_LINFORMER),
    )
    assert [r["status"] for r in rows] == ["done"] * 2
