"""Checkpoints that heal: a damaged one is moved aside in one line, and its step saved again."""

import jax.numpy as jnp
import numpy as np
import pytest

from lowrank_jax.train.checkpoint import CORRUPT, Checkpointer


def _state(value: float) -> dict:
    return {"w": jnp.full((64, 64), value), "b": jnp.arange(512.0) + value}  # past inlining


def _damage(directory, step: int) -> None:
    """Truncate every array file of checkpoint ``step`` (what a full disk or a bad copy leaves)."""
    files = [p for p in (directory / str(step) / "state").rglob("*") if p.is_file()]
    for path in files:
        if "ocdbt.process_" in str(path) and path.parent.name == "d":
            path.write_bytes(path.read_bytes()[:10])


@pytest.fixture
def saved(tmp_path):
    """A checkpoint folder with steps 1 and 2 (state values 1.0 and 2.0)."""
    directory = tmp_path / "checkpoints"
    checkpointer = Checkpointer(directory, keep=5)
    for step in (1, 2):
        checkpointer.save(step, _state(float(step)), {"step": step})
    checkpointer.close()
    return directory


def _stderr_lines(capfd) -> list[str]:
    return [line for line in capfd.readouterr().err.splitlines() if line.strip()]


def test_a_damaged_newest_checkpoint_is_moved_aside_in_one_line_and_saved_again(saved, capfd):
    _damage(saved, 2)
    capfd.readouterr()
    checkpointer = Checkpointer(saved, keep=5)
    step, state, data = checkpointer.restore_latest(_state(0.0))
    lines = _stderr_lines(capfd)
    assert len(lines) == 1, lines  # not TensorStore's spec dumps and asyncio's echoes
    assert lines[0].startswith(f"warning: checkpoint {saved / '2'} does not restore (")
    assert f"moved to {saved / CORRUPT}/2-" in lines[0]
    assert step == 1 and data == {"step": 1}
    np.testing.assert_array_equal(state["w"], np.full((64, 64), 1.0))
    (aside,) = (saved / CORRUPT).iterdir()  # kept as evidence, never deleted
    assert aside.name.startswith("2-") and (aside / "state").is_dir()
    checkpointer.save(2, _state(2.5), {"step": 2})  # the step can be written again
    checkpointer.close()
    step, state, _ = Checkpointer(saved, keep=5).restore_latest(_state(0.0))
    assert step == 2 and float(state["b"][0]) == 2.5


def test_every_checkpoint_damaged_restores_none_and_saves_from_scratch(saved, capfd):
    _damage(saved, 1)
    _damage(saved, 2)
    capfd.readouterr()
    checkpointer = Checkpointer(saved, keep=5)
    assert checkpointer.restore_latest(_state(0.0)) is None
    assert len(_stderr_lines(capfd)) == 2
    assert sorted(p.name.split("-")[0] for p in (saved / CORRUPT).iterdir()) == ["1", "2"]
    checkpointer.save(1, _state(1.0), {"step": 1})
    checkpointer.close()
    assert Checkpointer(saved, keep=5).restore_latest(_state(0.0))[0] == 1


def test_a_reader_does_not_heal(saved, capfd):
    _damage(saved, 2)
    step, _, _ = Checkpointer(saved, keep=5).restore_latest(_state(0.0), heal=False)
    assert step == 1 and not (saved / CORRUPT).exists() and (saved / "2").is_dir()
    assert "trying an older one" in capfd.readouterr().err


# Two processes over gloo save two Checkpointers at the same steps, as the trainer's last
# step saves its final and best checkpoints. Orbax names its barriers by the manager's
# prefix; with one shared name the two managers' barriers crossed between processes and
# every run of this hung (the flaky two-process trainer test before the fix).
_TWO_MANAGERS = """
import sys
import jax, jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
from lowrank_jax.train.checkpoint import Checkpointer
mesh = Mesh(jax.devices(), ("data",))
x = jax.device_put(jnp.arange(8.0 * len(jax.devices())), NamedSharding(mesh, PartitionSpec("data")))
newest = Checkpointer(sys.argv[3] + "/checkpoints", keep=2)
best = Checkpointer(sys.argv[3] + "/best", keep=1, best="max")
for step in range(1, 11):
    best.save(step, {"x": x * step}, {"step": step}, value=float(step))
    newest.save(step, {"x": x * step}, {"step": step})
newest.close()
best.close()
"""


@pytest.mark.slow
def test_two_processes_save_two_checkpointers_at_the_same_steps(tmp_path, two_processes):
    two_processes(_TWO_MANAGERS, str(tmp_path), devices=2)
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [9, 10]
    assert [p.name for p in (tmp_path / "best").iterdir()] == ["10"]
    restored = Checkpointer(tmp_path / "checkpoints", keep=2).restore_latest({"x": jnp.zeros(32)})
    assert restored[0] == 10 and restored[2] == {"step": 10}
    np.testing.assert_array_equal(restored[1]["x"], np.arange(32.0) * 10)
