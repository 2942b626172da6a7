import subprocess
import sys
from pathlib import Path

from lowrank_jax import cli, demo


def test_console_script_help():
    script = Path(sys.executable).parent / "lowrank-jax"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "usage: lowrank-jax" in result.stdout and "demo" in result.stdout


def test_demo_command_dispatches(monkeypatch):
    calls = []
    monkeypatch.setattr(demo, "run", lambda quick: calls.append(quick))
    assert cli.main(["demo", "--quick"]) == 0
    assert cli.main(["demo"]) == 0
    assert calls == [True, False]


def test_demo_quick_results(capsys):
    svd_rows, lora_rows = demo.run(quick=True)
    for row in svd_rows:  # the measured truncation error is the Eckart–Young bound
        assert abs(row["error"] - row["bound"]) < 1e-4
    by_rank = {row["rank"]: row for row in lora_rows}
    assert by_rank[4]["loss"] < 0.1 * by_rank[1]["loss"]  # rank 4 can fit a rank-4 update
    assert all(row["merge_diff"] < 1e-4 for row in lora_rows)
    assert "Truncated SVD" in capsys.readouterr().out
