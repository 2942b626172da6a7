import json

import pytest

from lowrank_jax import cli
from lowrank_jax.report import pareto_front, read_runs, write_report
from lowrank_jax.sweep import load_sweep, point_name, product, run_sweep, zip_points

TINY = """
from lowrank_jax.config import load_config

def get_config(arg=None):
    config = load_config("{tiny}:runlocal")
    config.train.update(steps=3, log_every=1, eval_every=0, eval_batches=1, checkpoint_every=3)
    config.train.peak_flops = 1e12
    return config

def get_sweep(arg=None):
    return [
        {{"model.ffn.dense.kind": "dense"}},
        {{"model.ffn.dense.kind": "factorized", "model.ffn.dense.rank": 4}},
        {{"model.ffn.dense.kind": "factorized", "model.ffn.dense.rank": 999}},  # fails
    ]
"""


def test_helpers():
    assert product(a=[1, 2], b=["x"]) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    assert zip_points(a=[1, 2], b=[3, 4]) == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
    with pytest.raises(ValueError):
        zip_points(a=[1, 2], b=[3])
    assert point_name({}) == "base"
    assert (
        point_name({"model.attention.kind": "performer", "seed": 1})
        == "attention.kind=performer,seed=1"
    )
    assert pareto_front([(1, 0.5), (2, 0.5), (3, 0.9)]) == [0, 2]


def test_rank_sweep_config_points():
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "configs" / "rank_sweep.py"
    points = load_sweep(f"{config}:ranks=2+8,attention=softmax+linformer")
    assert (
        len(points) == 2 + 4
        and {"model.ffn.dense.kind": "dense", "model.attention.kind": "linformer"} in points
    )


def test_sweep_runs_records_failures_resumes_and_reports(tmp_path, capsys):
    from pathlib import Path

    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.py"
    config = tmp_path / "sweep_config.py"
    config.write_text(TINY.format(tiny=tiny))
    workdir = tmp_path / "sweep"
    results = run_sweep(str(config), workdir)
    assert sorted(r["status"] for r in results) == ["failed", "trained", "trained"]
    failed = json.loads(
        (workdir / "ffn.dense.kind=factorized,ffn.dense.rank=999" / "failed.json").read_text()
    )
    assert "model.ffn.dense.rank: must be an integer in [1, 32]" in failed["error"]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(line.startswith("[") for line in lines)

    again = run_sweep(str(config), workdir)  # finished points are skipped
    assert sorted(r["status"] for r in again) == ["done", "done", "failed"]

    table, plots = write_report(workdir)
    assert all(p.exists() and p.stat().st_size > 1000 for p in plots)
    assert (workdir / "results.md").exists() and (workdir / "results.csv").exists()
    rows = {row["name"]: row for row in read_runs(workdir)}
    dense = rows["ffn.dense.kind=dense"]
    low = rows["ffn.dense.kind=factorized,ffn.dense.rank=4"]
    assert dense["ffn_rank"] is None and low["ffn_rank"] == 4
    assert low["params_total"] < dense["params_total"]
    assert rows["ffn.dense.kind=factorized,ffn.dense.rank=999"]["status"].startswith("failed")
    assert "| ffn.dense.kind=dense | softmax |" in table


def test_report_of_a_missing_directory(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
