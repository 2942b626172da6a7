import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lowrank_jax import cli
from lowrank_jax.sweeps.launch import load_sweep, point_name, product, run_sweep, zip_points
from lowrank_jax.sweeps.report import pareto_front, read_runs, write_report

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


@pytest.mark.slow  # a long quick form (DEVELOPERS.md)
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
    # ... recognised in the sweep process: no `lowrank-jax train` process is started for them
    assert all(r["seconds"] == 0.0 for r in again if r["status"] == "done")

    table, plots, _ = write_report(workdir)
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


def _fake_run(workdir, name, *, seed, rank, accuracy, step_time, curve=None, best_step=None):
    run = workdir / name
    run.mkdir(parents=True)
    dense = {"kind": "factorized", "rank": rank} if rank else {"kind": "dense", "rank": None}
    model = {"attention": {"kind": "softmax", "dense": {"kind": "dense"}}, "ffn": {"dense": dense}}
    (run / "config.json").write_text(json.dumps({"seed": seed, "model": model}))
    summary = {
        "params_total": 1000 + 10 * (rank or 100),
        "params_trainable": 1000,
        "test_accuracy": accuracy,
        "best_val_accuracy": accuracy + 0.01,
        "train_accuracy": accuracy + 0.05,
        "median_step_time_s": step_time,
        "best_step": best_step,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    curve = curve or [(10, accuracy - 0.1), (20, accuracy)]
    records = [{"step": step, "loss": 1.0} for step in range(5, 5 + 10 * len(curve), 10)]
    records += [{"step": step, "val_accuracy": value} for step, value in curve]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")


def test_report_aggregates_seeds_with_student_t_intervals(tmp_path):
    import csv

    workdir = tmp_path / "sweep"
    accuracies = [0.80, 0.84, 0.86]
    for seed, accuracy in enumerate(accuracies):
        name = f"ffn.dense.rank=4,seed={seed}"
        _fake_run(workdir, name, seed=seed, rank=4, accuracy=accuracy, step_time=0.1 + seed)
    _fake_run(workdir, "ffn.dense.kind=dense", seed=0, rank=None, accuracy=0.9, step_time=1.0)
    table, plots, _ = write_report(workdir)
    results = (workdir / "results.csv").read_text().splitlines()
    rows = {row["name"]: row for row in csv.DictReader(results)}
    low, dense = rows["ffn.dense.rank=4"], rows["ffn.dense.kind=dense"]
    mean, std = np.mean(accuracies), np.std(accuracies, ddof=1)
    assert low["n"] == "3" and float(low["test_accuracy"]) == pytest.approx(mean)
    assert float(low["test_accuracy_std"]) == pytest.approx(std)
    # t(0.975, 2) = 4.303: the half-width of the 95% interval of the mean of 3
    assert float(low["test_accuracy_ci95"]) == pytest.approx(4.3027 * std / np.sqrt(3), rel=1e-4)
    assert float(low["median_step_time_s"]) == pytest.approx(1.1)
    assert dense["n"] == "1" and dense["test_accuracy_ci95"] == ""  # n = 1: no interval
    assert f"| {mean:.4f} ± {4.3027 * std / np.sqrt(3):.4f} |" in table
    assert "| 0.9000 |" in table and table.count("±") == 5  # five metrics of the one n = 3 point
    assert len(list(csv.DictReader((workdir / "runs.csv").read_text().splitlines()))) == 4
    assert all(p.exists() and p.stat().st_size > 1000 for p in plots)


def test_report_flags_a_point_whose_runs_kept_their_last_evaluation(tmp_path, capsys):
    """Convergence, both ways: R = 1's three runs each keep their last evaluation (flagged,
    one warning line); R = 4's plateaued, only one of three kept its last (not flagged)."""
    workdir = tmp_path / "sweep"
    rising = [(10, 0.5), (20, 0.6), (30, 0.7), (40, 0.8)]
    flat = [(10, 0.7), (20, 0.85), (30, 0.84), (40, 0.85)]  # a tie keeps the earlier step
    for seed in range(3):
        _fake_run(workdir, f"ffn.dense.rank=1,seed={seed}", seed=seed, rank=1, accuracy=0.8,
                  step_time=0.1, curve=rising, best_step=40)  # fmt: skip
        best, curve = (40, [*flat[:3], (40, 0.86)]) if seed == 0 else (20, flat)
        _fake_run(workdir, f"ffn.dense.rank=4,seed={seed}", seed=seed, rank=4, accuracy=0.85,
                  step_time=0.1, curve=curve, best_step=best)  # fmt: skip
    assert cli.main(["report", str(workdir)]) == 0
    out = capsys.readouterr().out.splitlines()  # the table's rows, then the warnings
    warnings = [line for line in out if "still improving" in line and not line.startswith("|")]
    assert warnings == [
        "ffn.dense.rank=1: 3 of 3 runs were still improving at their last evaluation; "
        "train longer before reading this point"
    ]
    results = (workdir / "results.md").read_text()
    assert "| 3 of 3: still improving |" in results and "| 1 of 3 |" in results
    assert "## Still improving\n\n- ffn.dense.rank=1: 3 of 3 runs" in results
    rows = {r["name"]: r for r in csv.DictReader((workdir / "results.csv").open())}
    assert rows["ffn.dense.rank=1"]["still_improving"] == "True"
    assert rows["ffn.dense.rank=4"]["still_improving"] == "False"
    # the change over the last three evaluations: 0.8 - 0.5, and (0.86 - 0.7 + 2 * 0.15) / 3
    assert float(rows["ffn.dense.rank=1"]["val_change_last3"]) == pytest.approx(0.3)
    assert float(rows["ffn.dense.rank=4"]["val_change_last3"]) == pytest.approx(0.46 / 3)
    runs = {r["name"]: r for r in csv.DictReader((workdir / "runs.csv").open())}
    assert runs["ffn.dense.rank=4,seed=1"]["best_step"] == "20"
    assert runs["ffn.dense.rank=4,seed=1"]["last_eval_step"] == "40"


def test_one_run_without_a_kept_step_is_not_judged():
    from lowrank_jax.sweeps.stats import convergence, still_improving

    assert convergence([(10, 0.5), (20, 0.6)], best_step=None)["best_is_last"] is None
    assert convergence([], best_step=10)["last_step"] is None
    assert convergence([(10, 0.5), (20, 0.6)], best_step=20)["recent_change"] is None  # < 4
    assert still_improving([None, None]) == (0, 0, False)
    assert still_improving([True]) == (1, 1, True)  # one seed: its one run decides


def test_seeds_name_the_runs_and_a_bad_count_is_one_line(tmp_path, capsys):
    from lowrank_jax.sweeps.launch import with_seeds

    points = with_seeds([{"model.lora.rank": 2}, {"seed": 5}], 3)
    assert [point_name(p) for p in points] == [
        "lora.rank=2,seed=0",
        "lora.rank=2,seed=1",
        "lora.rank=2,seed=2",
        "seed=5",
    ]
    config = Path(__file__).resolve().parents[1] / "configs" / "rank_sweep.py"
    argv = ["sweep", "--config", str(config), "--workdir", str(tmp_path / "w"), "--seeds", "0"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.strip() == "error: --seeds: must be an integer >= 1, got 0"


@pytest.mark.parametrize(
    ("file", "text", "message"),
    [
        ("summary.json", '{"params_total": 10', "damaged, not JSON (Expecting"),
        ("metrics.jsonl", '{"step": 10}\nnot json\n', "damaged, line 2 is not JSON (Expecting"),
    ],
)
def test_a_damaged_run_file_stops_report_in_one_line_naming_it(
    tmp_path, capsys, file, text, message
):
    from lowrank_jax.sweeps.launch import finished

    workdir = tmp_path / "sweep"
    _fake_run(workdir, "ffn.dense.rank=4", seed=0, rank=4, accuracy=0.8, step_time=0.1)
    run = workdir / "ffn.dense.rank=4"
    (run / file).write_text(text)
    assert cli.main(["report", str(workdir)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"error: {run / file}: {message}" or line.startswith(
        f"error: {run / file}: {message}"
    )
    assert not (workdir / "results.md").exists()
    if file == "summary.json":  # a sweep rerun trains that point again (the trainer heals it)
        assert not finished(run, json.loads((run / "config.json").read_text()))


def test_difference_is_welchs_interval():
    import scipy.stats

    from lowrank_jax.sweeps.stats import difference

    low, high = [0.61, 0.64, 0.60, 0.66], [0.70, 0.71, 0.69]
    welch = scipy.stats.ttest_ind(low, high, equal_var=False).confidence_interval()
    got = difference(low, high)
    assert got["mean"] == pytest.approx((welch.low + welch.high) / 2)
    assert got["ci95"] == pytest.approx((welch.high - welch.low) / 2)
    assert difference([1.0], [0.0, 1.0])["ci95"] is None  # one seed: no interval
    assert difference([1.0, 1.0], [0.5, 0.5]) == {"mean": 0.5, "ci95": 0.0}


def test_a_field_added_later_at_its_default_keeps_a_run_finished(tmp_path):
    """A run recorded before an upgrade added a field (here the factorized kind's
    ``init``) is the same config when the new field holds its default."""
    from lowrank_jax.config import load_config
    from lowrank_jax.sweeps.launch import finished
    from lowrank_jax.train import rundir

    tiny = Path(__file__).parents[1] / "configs" / "tiny.py"
    config = json.loads(load_config(str(tiny)).to_json_best_effort(sort_keys=True))
    old = json.loads(json.dumps(config))
    del old["model"]["ffn"]["dense"]["init"], old["model"]["lora"]["rules"]
    assert rundir.same_config(old, config)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(old))
    (run / "summary.json").write_text("{}")
    assert finished(run, config)
    rundir.check(run, config, force=False)  # the trainer resumes it too
    changed = json.loads(json.dumps(config))
    changed["model"]["ffn"]["dense"]["init"] = "spectral"  # not the default: another run
    assert not rundir.same_config(old, changed) and not finished(run, changed)
    with pytest.raises(ValueError, match=r"model\.ffn\.dense\.init: None -> 'spectral'"):
        rundir.check(run, changed, force=False)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--launcherr", "slurm"], "error: --launcherr: not a flag of lowrank-jax sweep"),
        (["--config.train.stepz=3"], "error: --config.train.stepz: unknown field"),
        (["--config.train.steps=three"], "error: --config.train.steps: invalid literal"),
        (["--partition", "gpu"], "error: --partition: only with --launcher slurm"),
        (["--launcher", "pbs"], "error: --launcher: must be one of local, slurm, got 'pbs'"),
    ],
)
def test_a_flag_no_point_can_use_is_one_line_before_anything_starts(
    tmp_path, capsys, flags, message
):
    config = tmp_path / "sweep_config.py"
    config.write_text(TINY.format(tiny=Path(__file__).parents[1] / "configs" / "tiny.py"))
    workdir = tmp_path / "sweep"
    assert cli.main(["sweep", "--config", str(config), "--workdir", str(workdir), *flags]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(message), line
    assert not workdir.exists()  # nothing written, no point started


def test_slurm_without_its_commands_is_one_line(tmp_path, capsys, monkeypatch):
    config = tmp_path / "sweep_config.py"
    config.write_text(TINY.format(tiny=Path(__file__).parents[1] / "configs" / "tiny.py"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    workdir = tmp_path / "sweep"
    args = ["sweep", "--config", str(config), "--workdir", str(workdir), "--launcher", "slurm"]
    assert cli.main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --launcher: slurm needs sbatch on the PATH"), line
    assert not workdir.exists()


def test_the_array_task_module_runs_as_a_script_without_a_runpy_warning():
    """SLURM array tasks run ``python -m lowrank_jax.sweeps.slurm``: the package must not
    have imported that module already (runpy's RuntimeWarning on every task's stderr)."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "lowrank_jax.sweeps.slurm"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "usage: python -m lowrank_jax.sweeps.slurm task MANIFEST INDEX"
