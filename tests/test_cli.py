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


ROOT = Path(__file__).resolve().parents[1]


def test_surgery_preview_lists_every_selected_layer_on_shapes(capsys):
    config = f"{ROOT}/configs/lora_minilm.py:method=lora,rank=8"
    assert cli.main(["surgery", "--config", config]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| layers.")]
    # W_q and W_v of MiniLM's 6 layers, each R (384 + 384) = 6,144 LoRA parameters
    assert len(rows) == 12 and all("| LoRA | 8 | 16 | +6,144 |" in row for row in rows)
    assert {row.split(" | ")[0] for row in rows} == {
        f"| layers.{i}.attention.{p}" for i in range(6) for p in ("query", "value")
    }
    # trainable: the LoRA factors and the new reviews head (384 x 2 + 2), as the run's summary
    assert "trainable 74,498 (0.33%)" in out
    assert cli.main(["surgery", "--config", config, "--config.model.lora.variant=dora"]) == 0
    assert "| DoRA | 8 | 16 | +6,528 |" in capsys.readouterr().out  # + m, one per output


def test_surgery_preview_rule_selecting_nothing_is_one_line(capsys):
    config = f"{ROOT}/configs/lora_minilm.py:method=lora"
    code = cli.main(["surgery", "--config", config, "--config.model.lora.targets=nowhere"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: model.lora.targets: must be a pattern matching some of")
