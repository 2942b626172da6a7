"""Quick forms of the sweep experiments: every point trains 2 steps in-process on tiny data."""

from pathlib import Path

import pytest

from lowrank_jax.config import load_module
from lowrank_jax.sweeps.launch import apply_point, point_name
from lowrank_jax.sweeps.report import read_runs, write_report

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture
def quick_sweep(tmp_path, quick_train):
    """``quick_sweep(file, arg, data=, model=, keep=)`` -> the report's rows of the sweep."""

    def run(file: str, arg: str, *, data=None, model=None, keep=None) -> list[dict]:
        module = load_module(CONFIGS / file)
        points = module.get_sweep(arg)
        points = [p for p in points if keep(p)] if keep else points
        workdir = tmp_path / "sweep"
        for point in points:
            config = apply_point(module.get_config(arg), point)
            config.data.update(data or {})
            config.model.update(model or {})
            quick_train(config, workdir / point_name(point), steps=2)
        write_report(workdir)
        for name in ("results.md", "results.csv", "accuracy_vs_rank.png", "accuracy_vs_params.png"):
            assert (workdir / name).exists(), name
        return read_runs(workdir)

    return run
