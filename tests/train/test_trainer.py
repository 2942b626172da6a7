"""End-to-end training: the CLI, meshes, several processes, kill and resume, bad input, NaN.

One reference run (1 CPU device, in a subprocess) is shared by the tests that
compare against it. Those that start more trainer processes (several hosts, a
kill, a damaged checkpoint, a NaN, two writers, a full disk) are ``slow``:
``.ci/run`` runs them after ``make test`` (DEVELOPERS.md).
"""

import atexit
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

from lowrank_jax import cli
from lowrank_jax.config import ConfigError
from lowrank_jax.train.checkpoint import Checkpointer, CheckpointError
from lowrank_jax.train.state import load_model, params_sha256, single_device_mesh, train_state

ROOT = Path(__file__).resolve().parents[2]
CONFIG = f"{ROOT}/configs/tiny.py:runlocal"
STEPS = 12
COMMON = [
    f"--config.train.steps={STEPS}",
    "--config.train.log_every=1",
    "--config.train.eval_every=0",
    "--config.train.checkpoint_every=4",
    "--config.train.peak_flops=1e12",
]


# Subprocess runs share compiled programs (the same step compiles once for the module).
CACHE = tempfile.mkdtemp(prefix="lowrank-jax-test-cache-")
atexit.register(shutil.rmtree, CACHE, True)


def _env(devices: int, **extra) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    env.update(
        JAX_COMPILATION_CACHE_DIR=CACHE,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
    )
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env.update(extra)
    return env


def _train_command(workdir, config=CONFIG) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lowrank_jax.cli",
        "train",
        "--config",
        config,
        "--workdir",
        str(workdir),
    ]


def _run(workdir, *args, devices=1, env=None, check=True, config=CONFIG):
    command = _train_command(workdir, config)
    result = subprocess.run(
        [*command, *COMMON, *args],
        env=env or _env(devices),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and result.returncode:
        raise AssertionError(f"exit {result.returncode}\n{result.stderr[-3000:]}")
    return result


def _losses(workdir) -> np.ndarray:
    records = [
        json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()
    ]
    return np.array([r["loss"] for r in records if "loss" in r])


def _summary(workdir) -> dict:
    return json.loads((Path(workdir) / "summary.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference")
    _run(workdir)
    return workdir


def test_cli_run_writes_the_run_files(reference):
    for name in ("config.json", "metrics.jsonl", "summary.json", "tensorboard", "checkpoints"):
        assert (reference / name).exists(), name
    summary = _summary(reference)
    assert summary["step_traces"] == 1  # the jitted step compiled once for the whole run
    assert summary["final_step"] == STEPS and summary["params_total"] == summary["params_trainable"]
    records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    for key in ("loss", "accuracy", "learning_rate", "step_time_s", "tokens_per_s", "mfu"):
        assert key in records[-1]
    assert "val_accuracy" in records[-1]
    assert sorted(os.listdir(reference / "checkpoints")) == ["12", "8"]  # keep 2


@pytest.mark.parametrize("mesh", [{"data": 8}, {"data": 4, "tensor": 2}, {"data": 1, "fsdp": 8}])
def test_meshes_give_the_single_device_loss_curve(reference, tmp_path, mesh):
    from lowrank_jax.train.trainer import train_and_evaluate

    config = _config()
    for axis in ("data", "fsdp", "tensor"):
        config.mesh[axis] = mesh.get(axis, 1)
    train_and_evaluate(config, tmp_path)
    # Each mesh sums the loss and gradients over 32×64 tokens in another order: ~√2048·u
    # = 3e-6 relative a step, rounding at random (u = 2^-24). Adam turns relative changes
    # of g into the same relative changes of its step (a sign flip only where |g| is at
    # rounding level, which moves the loss by ~|g|·lr ≈ 0); 12 stable steps add up to
    # <~ 4e-5 of the loss. rtol 2e-4 (atol 2e-5 for a loss near 0) leaves margin.
    np.testing.assert_allclose(_losses(tmp_path), _losses(reference), rtol=2e-4, atol=2e-5)


def _config():
    sys.path.insert(0, str(ROOT / "configs"))
    try:
        import tiny
    finally:
        sys.path.pop(0)
    config = tiny.get_config("runlocal")
    config.train.update(steps=STEPS, log_every=1, eval_every=0, checkpoint_every=4, peak_flops=1e12)
    return config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_over_gloo_match_one_process(reference, tmp_path):
    address = f"localhost:{_free_port()}"
    command = _train_command(tmp_path)
    processes = [
        subprocess.Popen(
            [
                *command,
                *COMMON,
                f"--coordinator_address={address}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [out[1][-2000:] for out in outputs]
    summary = _summary(tmp_path)
    assert summary["num_processes"] == 2 and summary["num_devices"] == 4
    # as test_meshes_give_the_single_device_loss_curve: gloo's all-reduce is another order
    np.testing.assert_allclose(_losses(tmp_path), _losses(reference), rtol=2e-4, atol=2e-5)


@pytest.mark.slow
def test_sigkill_and_resume_is_bitwise_identical(reference, tmp_path):
    killed = _run(tmp_path, env=_env(1, LOWRANK_JAX_KILL_AT_STEP="9"), check=False)
    assert killed.returncode == -9
    assert not (tmp_path / "summary.json").exists()
    resumed = _run(tmp_path)
    assert "resuming" in resumed.stderr
    summary = _summary(tmp_path)
    assert summary["resumed_from_step"] in (4, 8)
    assert summary["params_sha256"] == _summary(reference)["params_sha256"]
    assert len(_losses(tmp_path)) == STEPS  # lines after the checkpoint were rewritten, not doubled


def _damage(checkpoint: Path) -> None:
    for path in checkpoint.rglob("*"):
        if path.is_file():
            path.write_bytes(b"corrupt")


def _messages(stderr: str) -> list[str]:
    """stderr without the progress bar."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("train:")]


@pytest.mark.slow
def test_a_corrupt_final_checkpoint_heals(reference, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    _damage(workdir / "checkpoints" / "12")
    with pytest.raises(CheckpointError, match=r"step 8\b.*params_sha256 differs"):
        load_model(workdir, "final")  # never other parameters than the summary's
    assert (workdir / "checkpoints" / "12").is_dir()  # a reader changes nothing
    result = _run(workdir)  # the finished run is repaired by rerunning its command
    warning, resuming = _messages(result.stderr)
    assert warning.startswith(f"warning: checkpoint {workdir}/checkpoints/12 does not restore (")
    assert f"moved to {workdir}/checkpoints/corrupt/12-" in warning
    assert resuming == f"resuming {workdir} from step 8"
    assert [p.name.split("-")[0] for p in (workdir / "checkpoints" / "corrupt").iterdir()] == ["12"]
    summary = _summary(workdir)
    assert summary["resumed_from_step"] == 8
    assert summary["params_sha256"] == _summary(reference)["params_sha256"]
    assert params_sha256(load_model(workdir, "final")) == summary["params_sha256"]
    assert len(_losses(workdir)) == STEPS
    again = _run(workdir)  # healed: nothing left to redo
    assert _messages(again.stderr) == [] and again.stdout.startswith("done:")
    assert _summary(workdir) == summary


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    result = _run(
        tmp_path,
        "--config.train.learning_rate=1e30",
        "--config.train.warmup_steps=2",
        "--config.train.checkpoint_every=1",
        check=False,
    )
    assert result.returncode == 3
    last = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(last) == 1 and "non-finite loss" in last[0]
    saved = int(last[0].rsplit("last checkpoint: ", 1)[1].rstrip(")"))
    assert max(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == saved
    assert not (tmp_path / "summary.json").exists()
    # the kept checkpoint restores, with finite parameters
    config = _config()
    like = _fresh_state(config)
    step, state, data_state = Checkpointer(tmp_path / "checkpoints", keep=2).restore_latest(like)
    assert step == saved and data_state == {"step": saved}
    floats = [
        x for x in jax.tree.leaves(state) if jax.numpy.issubdtype(x.dtype, jax.numpy.floating)
    ]
    assert floats and all(bool(jax.numpy.isfinite(x).all()) for x in floats)


def _fresh_state(config):
    return _fresh(config)[1]


def _fresh(config):
    """A 1-device (model, optimizer) graphdef and state of ``config``, as the trainer builds it."""

    config.mesh.data = 1
    placed = train_state(config, single_device_mesh(), steps=False)
    return placed.graphdef, placed.state


BAD = [
    (["--config.train.stepz=3"], "--config.train.stepz: unknown field"),
    (["--config.train.steps=abc"], "--config.train.steps=abc"),
    (
        ["--config.model.ffn.dense.kind=factorized", "--config.model.ffn.dense.rank=0"],
        "model.ffn.dense.rank: must be an integer in [1, 32]",
    ),
    (
        ["--config.model.ffn.dense.kind=factorized", "--config.model.ffn.dense.rank=1000"],
        "got 1000",
    ),
    (
        ["--config.model.attention.kind=flash"],
        "model.attention.kind: must be one of linformer, performer, softmax, got 'flash'",
    ),
    (
        ["--config.model.attention.dense.kind=lowrank"],
        "model.attention.dense.kind: must be one of dense, factorized, got 'lowrank'",
    ),
    (
        ["--config.train.batch_size=30"],
        "train.batch_size: must be divisible by the data-parallel size 8 "
        "(mesh data=8 x fsdp=1), got 30",
    ),
    (["--config.mesh.data=3"], "mesh: data=3 x fsdp=1 x tensor=1 does not fit the 8 devices"),
    (
        ["--config.model.pretrained=bert-huge"],
        "model.pretrained: must be a folder or a known model (known: all-MiniLM-L6-v2), "
        "got 'bert-huge'",
    ),
    (
        ["--config.data.name=nope"],
        "data.name: must be one of fashion_mnist, listops, listops_small, "
        "reviews, sms_spam, synthetic, trec, got 'nope'",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_one_line_exit_2_workdir_untouched(tmp_path, monkeypatch, capsys, args, message):
    workdir = tmp_path / "run"
    argv = ["train", "--config", CONFIG, "--workdir", str(workdir), *args]
    monkeypatch.setattr(
        sys, "argv", ["lowrank-jax", *argv]
    )  # ml_collections reads overrides from sys.argv
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not workdir.exists()


def test_bad_config_args_and_missing_file(tmp_path, monkeypatch, capsys):
    for spec, message in [
        (
            f"{ROOT}/configs/tiny.py:attention=flash",
            "must be one of linformer, performer, softmax, got 'flash'",
        ),
        (
            f"{ROOT}/configs/tiny.py:bogus=1",
            "config arg 'bogus': unknown; valid: attention, lora, rank, runlocal",
        ),
        (f"{ROOT}/configs/tiny.py:rank=1000", "got 1000"),
        (f"{ROOT}/configs/nope.py", "No such file or directory"),
    ]:
        argv = ["train", "--config", spec, "--workdir", str(tmp_path / "run")]
        monkeypatch.setattr(sys, "argv", ["lowrank-jax", *argv])
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()


def test_workdir_with_another_config_is_refused_unless_forced(
    reference, tmp_path, monkeypatch, capsys
):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}
    argv = [
        "train",
        "--config",
        CONFIG,
        "--workdir",
        str(workdir),
        *COMMON,
        "--config.train.steps=13",
    ]
    monkeypatch.setattr(sys, "argv", ["lowrank-jax", *argv])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a run of a different config (train.steps: 12 -> 13)" in err[0]
    assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*")} == before
    with pytest.raises(ConfigError):  # the same check, in the library
        from lowrank_jax.train.rundir import check

        check(workdir, {"different": True}, force=False)


def test_lora_only_bf16_performer_run(tmp_path):
    from lowrank_jax.train.trainer import train_and_evaluate

    config = _config()
    config.model.lora.rank = 2
    config.model.attention.kind = "performer"
    config.model.attention.performer.redraw = "step"
    config.model.dtype = "bfloat16"
    config.train.update(steps=3, trainable="lora")
    config.mesh.data = 8
    summary = train_and_evaluate(config, tmp_path)
    assert summary["params_trainable"] == summary["params_lora"] > 0
    # AdamW's two float32 moments of the trainable parameters, plus step counters
    moments = 2 * 4 * summary["params_trainable"]
    assert moments <= summary["optimizer_state_bytes"] <= moments + 64
    assert summary["step_traces"] == 1 and np.isfinite(_losses(tmp_path)).all()


def test_train_accuracy_is_the_selected_models_on_the_first_training_batches(tmp_path):

    from lowrank_jax import data
    from lowrank_jax.sweeps.report import read_runs

    run = tmp_path / "point"
    _run(run, "--config.train.train_eval_batches=3")
    summary = _summary(run)
    config = _config()
    model = load_model(run)  # the selected checkpoint: evaluated only at the end, the final one
    assert summary["best_step"] == STEPS
    assert params_sha256(model) == summary["best_params_sha256"]
    assert summary["best_params_sha256"] == summary["params_sha256"]
    source = data.make_source(
        config.data,
        split="train",
        batch_size=config.train.batch_size,
        rows=np.arange(config.train.batch_size),
        seed=config.seed,
    )
    hits = []
    for _ in range(3):
        batch = next(source)
        logits = model(batch["tokens"], batch["mask"])
        hits.append(np.mean(np.asarray(logits.argmax(-1)) == batch["label"]))
    # means of k/32 hits: exact up to one float rounding; 1e-6 (< 1/96) demands equal hits
    np.testing.assert_allclose(summary["train_accuracy"], np.mean(hits), atol=1e-6)
    (row,) = read_runs(tmp_path)
    assert row["train_accuracy"] == summary["train_accuracy"]
    assert row["test_accuracy"] == summary["test_accuracy"]
    assert row["train_test_gap"] == row["train_accuracy"] - row["test_accuracy"]
    # the final model's own sample: here it is the selected one, so the same figure
    assert summary["final_train_accuracy"] == summary["train_accuracy"]
    assert (
        row["final_train_test_gap"]
        == summary["final_train_accuracy"] - summary["final_test_accuracy"]
    )


@pytest.mark.slow
def test_two_writers_on_one_workdir_one_runs_the_other_exits_2(tmp_path):
    workdir = tmp_path / "run"
    command = [*_train_command(workdir), *COMMON, "--config.train.steps=60"]
    writers = [
        subprocess.Popen(command, env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=300) for w in writers]
    codes = [w.returncode for w in writers]
    assert sorted(codes) == [0, 2], [err[-2000:] for _, err in outputs]
    refused = _messages(outputs[codes.index(2)][1].decode())
    assert len(refused) == 1, refused
    assert refused[0].startswith(f"error: workdir: {workdir} is in use by another lowrank-jax run")
    steps = [
        int(re.search(r'"step": (\d+)', line)[1])
        for line in (workdir / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, 61))  # each step once
    assert _summary(workdir)["final_step"] == 60


@pytest.fixture
def small_disk(tmp_path):
    """A 700 KiB tmpfs: room for the config, metrics and one checkpoint of the tiny run."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode:
        pytest.skip(f"mounting a small tmpfs needs root: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_rerun_resumes_bitwise(small_disk, tmp_path):
    workdir = small_disk / "run"
    full = _run(workdir, check=False)
    assert full.returncode == 4, full.stderr[-3000:]
    (line,) = _messages(full.stderr)  # not orbax's hundreds of lines, and no hang
    assert line.startswith(
        f"error: no space left on device under {workdir}: a checkpoint needs about "
    )
    kept = int(re.search(r"last checkpoint: step (\d+), untouched\)$", line)[1])
    restored = Checkpointer(workdir / "checkpoints", keep=8).restore_latest(
        _fresh_state(_config()), heal=False
    )
    assert restored[0] == kept  # the previous good checkpoint restores
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
    resumed = _run(workdir)
    assert f"resuming {workdir} from step {kept}" in resumed.stderr
    whole = tmp_path / "whole"
    _run(whole)
    assert _summary(workdir)["params_sha256"] == _summary(whole)["params_sha256"]


def test_training_lowers_the_loss(tmp_path):
    """The tiny synthetic task is learnable: 60 steps take the loss well below its start."""
    from lowrank_jax.train.trainer import train_and_evaluate

    config = _config()
    config.train.update(steps=60, checkpoint_every=60, learning_rate=3e-3, warmup_steps=5)
    train_and_evaluate(config, tmp_path)
    losses = _losses(tmp_path)
    assert losses[-10:].mean() < 0.8 * losses[:5].mean(), losses
