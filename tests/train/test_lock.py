"""One writer per run and per sweep (``train/lock.py``), and other ways to lose a result."""

import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from lowrank_jax import cli
from lowrank_jax.config import ConfigError
from lowrank_jax.train.lock import LOCK_FILE, RunLock
from lowrank_jax.train.metrics import MetricsWriter

ROOT = Path(__file__).resolve().parents[2]
TINY = f"{ROOT}/configs/tiny.py:runlocal"


def _main(monkeypatch, capsys, argv) -> tuple[int, list[str]]:
    monkeypatch.setattr(sys, "argv", ["lowrank-jax", *argv])  # ml_collections reads sys.argv
    code = cli.main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_second_lock_names_the_holder_and_a_dead_holders_file_is_no_lock(tmp_path):
    (tmp_path / LOCK_FILE).write_text("pid 999999, host gone\n")  # left by a dead process
    with RunLock(tmp_path, "run"):
        holder = f"pid {os.getpid()}, host {socket.gethostname()}"
        with pytest.raises(ConfigError, match=rf"in use by another lowrank-jax run \({holder}\)"):
            RunLock(tmp_path, "run").__enter__()
    with RunLock(tmp_path, "run"):  # released on exit
        pass


def test_a_second_train_on_a_workdir_in_use_exits_2_and_writes_nothing(
    tmp_path, monkeypatch, capsys
):
    workdir = tmp_path / "run"
    with RunLock(workdir, "run"):
        argv = ["train", "--config", TINY, "--workdir", str(workdir)]
        code, err = _main(monkeypatch, capsys, argv)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: workdir: {workdir} is in use by another lowrank-jax run")
    assert f"pid {os.getpid()}" in err[0]
    assert sorted(p.name for p in workdir.iterdir()) == [LOCK_FILE]  # nothing else written


def test_a_second_sweep_on_a_directory_in_use_exits_2(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    config = f"{ROOT}/configs/rank_sweep.py"
    with RunLock(sweep, "sweep"):
        code, err = _main(
            monkeypatch, capsys, ["sweep", "--config", config, "--workdir", str(sweep)]
        )
    assert code == 2 and len(err) == 1 and "in use by another lowrank-jax sweep" in err[0], err
    assert sorted(p.name for p in sweep.iterdir()) == [LOCK_FILE]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--jobs", "0"], "error: --jobs: must be an integer >= 1, got 0"),
        (["--jobs", "-5"], "error: --jobs: must be an integer >= 1, got -5"),
    ],
)
def test_bad_sweep_flags(tmp_path, monkeypatch, capsys, argv, message):
    config = f"{ROOT}/configs/rank_sweep.py"
    code, err = _main(
        monkeypatch, capsys, ["sweep", "--config", config, "--workdir", str(tmp_path / "w"), *argv]
    )
    assert (code, err) == (2, [message])
    assert not (tmp_path / "w").exists()


def test_a_workdir_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "file"
    path.write_text("not a run")
    code, err = _main(monkeypatch, capsys, ["train", "--config", TINY, "--workdir", str(path)])
    assert (code, err) == (2, [f"error: workdir: {path} is a file, not a directory"])
    assert path.read_text() == "not a run"


def test_half_a_last_metrics_line_is_dropped_on_resume(tmp_path):
    """A kill mid-write leaves a partial line; the resumed run keeps the complete ones."""
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in (10, 20, 30)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 40, "lo')
    writer = MetricsWriter(tmp_path, total_steps=50, start_step=20)
    writer.close()
    kept = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert kept == lines[:2]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def get_sweep(arg=None:\n", "--config: {path}: SyntaxError: "),
        ("def get_sweep(arg=None):\n    raise KeyError('x')\n", "--config: {path}: KeyError: 'x'"),
        ("def get_sweep(arg=None):\n    return [1, 2]\n", "--config: {path}: get_sweep must"),
    ],
)
def test_a_bad_sweep_config_file_is_one_line(tmp_path, monkeypatch, capsys, source, message):
    path = tmp_path / "bad.py"
    path.write_text(source)
    argv = ["sweep", "--config", str(path), "--workdir", str(tmp_path / "w")]
    code, err = _main(monkeypatch, capsys, argv)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: " + message.format(path=path))
    assert not (tmp_path / "w").exists()


def test_get_config_returning_none_and_report_on_a_run_directory(tmp_path, monkeypatch, capsys):
    path = tmp_path / "none.py"
    path.write_text("def get_config(arg=None):\n    return None\n")
    argv = ["train", "--config", str(path), "--workdir", str(tmp_path / "w")]
    code, err = _main(monkeypatch, capsys, argv)
    assert (code, err) == (
        2,
        ["error: --config: its get_config returned None; it must return the config"],
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    code, err = _main(monkeypatch, capsys, ["report", str(run)])
    assert (code, err) == (
        2,
        [f"error: workdir: {run} is one run's directory; report reads a sweep's"],
    )
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]  # nothing written into it


def test_a_summary_lost_to_a_kill_is_rewritten_from_the_metrics_on_disk(tmp_path):
    """Killed after the final checkpoint, before summary.json: the rerun trains nothing."""
    from lowrank_jax.config import load_config
    from lowrank_jax.train.trainer import train_and_evaluate

    config = load_config(TINY)
    config.train.update(steps=4, log_every=1, eval_every=0, checkpoint_every=4, peak_flops=1e12)
    first = train_and_evaluate(config, tmp_path)
    (tmp_path / "summary.json").unlink()
    again = train_and_evaluate(config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    times = sorted(r["step_time_s"] for r in records if "step_time_s" in r)
    assert again["resumed_from_step"] == 4 and again["median_step_time_s"] is not None
    assert again["median_step_time_s"] == pytest.approx(float(np.median(times)))
    assert again["params_sha256"] == first["params_sha256"]
    assert again["test_accuracy"] == first["test_accuracy"]


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "data"
    path.write_text("not a folder")
    monkeypatch.setenv("LOWRANK_JAX_DATA", str(path))
    config = f"{ROOT}/configs/text.py:task=trec,runlocal"
    argv = ["train", "--config", config, "--workdir", str(tmp_path / "w")]
    code, err = _main(monkeypatch, capsys, argv)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: data.data_dir: must be a dir")
    assert not (tmp_path / "w").exists()


def test_a_damaged_summary_is_written_again_and_damaged_metrics_lines_dropped(tmp_path, capfd):
    from lowrank_jax.config import load_config
    from lowrank_jax.train.trainer import train_and_evaluate

    config = load_config(TINY)
    config.train.update(steps=4, log_every=1, eval_every=0, checkpoint_every=4, peak_flops=1e12)
    first = train_and_evaluate(config, tmp_path)
    (tmp_path / "summary.json").write_text('{"final_step": 4, "test_acc')  # a damaged copy
    capfd.readouterr()
    again = train_and_evaluate(config, tmp_path)
    assert f"warning: {tmp_path / 'summary.json'}: damaged, not JSON" in capfd.readouterr().err
    assert again["params_sha256"] == first["params_sha256"]
    assert json.loads((tmp_path / "summary.json").read_text()) == again

    lines = [json.dumps({"step": s, "loss": 1.0}) for s in (10, 20, 30)]
    (tmp_path / "metrics.jsonl").write_text(f"{lines[0]}\ngarbage\n{lines[1]}\n{lines[2]}\n")
    MetricsWriter(tmp_path, total_steps=50, start_step=20).close()
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == lines[:2]
    assert "dropped 1 damaged lines" in capfd.readouterr().err


def test_a_workdir_under_a_read_only_directory_is_one_line(tmp_path, monkeypatch, capsys):
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: make the directory refuse as it would a user
        mkdir = Path.mkdir

        def refuse(self, *args, **kwargs):
            if parent in self.parents:
                raise PermissionError(13, "Permission denied", str(self))
            return mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", refuse)
    workdir = parent / "run"
    code, err = _main(monkeypatch, capsys, ["train", "--config", TINY, "--workdir", str(workdir)])
    assert (code, err) == (2, [f"error: workdir: cannot write {workdir} (Permission denied)"])
    assert not workdir.exists()
