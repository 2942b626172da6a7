"""The SLURM launcher on a real one-node cluster (``scripts/slurm-local start``, as root).

Marked ``slurm``: ``make test-slurm`` runs them, and ``.ci/run`` starts the
cluster first. Where no cluster answers, each test skips and says why.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = f"{ROOT}/configs/tiny.py:runlocal"
SWEEP = """
from lowrank_jax.config import load_config

def get_config(arg=None):
    config = load_config("{tiny}")
    config.train.update(steps={steps}, log_every=1, eval_every=0, eval_batches=1)
    config.train.update(checkpoint_every=4, peak_flops=1e12)
    return config

def get_sweep(arg=None):
    return {points}
"""
DENSE = {"model.ffn.dense.kind": "dense"}
FACTORIZED = {"model.ffn.dense.kind": "factorized", "model.ffn.dense.rank": 4}
BAD = {"model.ffn.dense.kind": "factorized", "model.ffn.dense.rank": 999}

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """Skip, saying why, unless the local cluster answers (scripts/slurm-local status)."""
    status = subprocess.run([ROOT / "scripts" / "slurm-local", "status"], capture_output=True)
    if status.returncode:
        pytest.skip("no SLURM cluster answers: run `scripts/slurm-local start` as root first")


def _config(tmp_path, points, steps=6) -> str:
    path = tmp_path / "sweep_config.py"
    path.write_text(SWEEP.format(tiny=TINY, steps=steps, points=points))
    return str(path)


def _sweep(*args, env=None, check=None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "lowrank_jax.cli", "sweep", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})},
    )
    if check is not None:
        assert result.returncode == check, result.stdout + result.stderr
    return result


def _sha(run_dir: Path) -> str:
    return json.loads((run_dir / "summary.json").read_text())["params_sha256"]


def test_a_slurm_sweep_is_one_array_and_trains_what_local_trains(tmp_path):
    config = _config(tmp_path, [DENSE, FACTORIZED, BAD])
    slurm = tmp_path / "slurm"
    result = _sweep(
        "--config", config, "--workdir", slurm, "--launcher", "slurm", "--poll-seconds", 1, check=1
    )
    assert "submitted slurm job array" in result.stdout
    record = json.loads((slurm / "sweep.json").read_text())
    assert record["launcher"] == "slurm" and len(record["slurm_jobs"]) == 1
    failed = json.loads(
        (slurm / "ffn.dense.kind=factorized,ffn.dense.rank=999/failed.json").read_text()
    )
    assert failed["error"].startswith("error: model.ffn.dense.rank: must be an integer in [1, 32]")

    local = tmp_path / "local"
    _sweep("--config", config, "--workdir", local, check=1)
    for point in ("ffn.dense.kind=dense", "ffn.dense.kind=factorized,ffn.dense.rank=4"):
        assert _sha(slurm / point) == _sha(local / point)

    rerun = _sweep(
        "--config", config, "--workdir", slurm, "--launcher", "slurm", "--poll-seconds", 1, check=1
    )
    assert "1 task(s)" in rerun.stdout  # only the failed point goes again
    assert len(json.loads((slurm / "slurm" / "jobs.json").read_text())) == 2


def _live(workdir: Path) -> list[str]:
    jobs = json.loads((workdir / "slurm" / "jobs.json").read_text())
    ids = ",".join(job["job_id"] for job in jobs)
    out = subprocess.run(["squeue", "-h", "-r", "-j", ids, "-o", "%i %T"], capture_output=True)
    return out.stdout.decode().split()


def test_a_cancelled_task_is_recorded_and_resumes_on_rerun(tmp_path):
    config = _config(tmp_path, [DENSE, FACTORIZED], steps=24)
    workdir, slow = tmp_path / "sweep", {"LOWRANK_JAX_STEP_DELAY": "0.5"}
    args = ("--config", config, "--workdir", workdir, "--launcher", "slurm")
    _sweep(*args, "--no-wait", env=slow, check=0)
    again = _sweep(*args, "--no-wait", env=slow, check=0)  # while the array still runs
    assert "not submitted again" in again.stdout and "submitted slurm" not in again.stdout
    job = json.loads((workdir / "slurm" / "jobs.json").read_text())[0]["job_id"]
    checkpoints = workdir / "ffn.dense.kind=dense" / "checkpoints"
    deadline = time.time() + 300
    while not (checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir())):
        assert time.time() < deadline, "the first point never checkpointed"
        time.sleep(0.5)
    subprocess.run(["scancel", f"{job}_0"], check=True)
    while _live(workdir):
        assert time.time() < deadline, "the array never ended"
        time.sleep(1)
    status = _sweep("--workdir", workdir, "--launcher", "slurm", "--status", check=1)
    failed = json.loads((workdir / "ffn.dense.kind=dense" / "failed.json").read_text())
    assert f"slurm task {job}_0 cancelled" in failed["error"], failed
    assert "failed" in status.stdout

    rerun = _sweep(*args, "--poll-seconds", 1, check=0)
    assert "1 task(s)" in rerun.stdout
    assert _summary(workdir)["resumed_from_step"] >= 4  # from the cancelled task's checkpoint
    reference = tmp_path / "reference"
    _sweep("--config", config, "--workdir", reference, check=0)
    assert _sha(workdir / "ffn.dense.kind=dense") == _sha(reference / "ffn.dense.kind=dense")


def _summary(workdir: Path) -> dict:
    return json.loads((workdir / "ffn.dense.kind=dense" / "summary.json").read_text())


def _losses(workdir: Path) -> np.ndarray:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return np.array([r["loss"] for r in map(json.loads, lines) if "loss" in r])


def test_srun_two_processes_give_the_single_process_loss_curve(tmp_path):
    common = [
        "--config.train.steps=12",
        "--config.train.log_every=1",
        "--config.train.eval_every=0",
        "--config.train.checkpoint_every=4",
        "--config.train.peak_flops=1e12",
    ]
    train = [sys.executable, "-m", "lowrank_jax.cli", "train", "--config", TINY]
    one_device = "--xla_force_host_platform_device_count=1"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": one_device}
    single = subprocess.run(
        [*train, "--workdir", str(tmp_path / "one"), *common], env=env, capture_output=True
    )
    assert single.returncode == 0, single.stderr[-2000:]
    two = subprocess.run(
        [
            "srun",
            "-n",
            "2",
            "--cpus-per-task=1",
            *train,
            "--workdir",
            str(tmp_path / "two"),
            *common,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["num_devices"] == 2
    np.testing.assert_allclose(
        _losses(tmp_path / "two"), _losses(tmp_path / "one"), rtol=2e-4, atol=2e-5
    )


def test_a_point_of_two_processes_trains_under_srun(tmp_path):
    config = _config(tmp_path, [DENSE])
    workdir = tmp_path / "sweep"
    one_device = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    args = ("--config", config, "--workdir", workdir, "--launcher", "slurm")
    _sweep(*args, "--tasks-per-node", 2, "--poll-seconds", 1, env=one_device, check=0)
    summary = _summary(workdir)
    assert summary["num_processes"] == 2 and summary["num_devices"] == 2
