import argparse
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

from absl import flags

import lowrank_jax
from lowrank_jax import cli, demo

SCRIPT = Path(sys.executable).parent / "lowrank-jax"
SUBCOMMANDS = ["train", "surgery", "sweep", "report", "demo", "tables"]


def _script(*args: str) -> str:
    """The installed ``lowrank-jax`` script's stdout (it must exit 0)."""
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, check=True).stdout


def test_console_script_is_the_package_entry_point():
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name="lowrank-jax")
    assert entry.value == "lowrank_jax.cli:main" and entry.load() is cli.main
    assert "from lowrank_jax.cli import main" in SCRIPT.read_text()
    assert _script("--version").strip() == f"lowrank-jax {lowrank_jax.__version__}"


def test_console_script_help_lists_every_subcommand_and_its_real_options():
    parser = cli._parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(commands.choices) == SUBCOMMANDS
    out = _script("--help")
    assert out.startswith("usage: lowrank-jax")
    assert re.findall(r"^    (\w+) ", out, re.MULTILINE) == SUBCOMMANDS  # each with its help
    # train and surgery print help written by hand: every option it names is a flag they
    # parse, and train's names every one of them
    real = flags.FlagValues()
    cli._define_flags(real)

    def named(text: str) -> set[str]:
        return set(re.findall(r"--(\w+)\b(?!\.)", text)) - {"help"}

    train = _script("train", "--help")
    assert train.startswith("usage: lowrank-jax train") and "--config.FIELD=VALUE" in train
    assert (
        named(train)
        == set(real)
        == {
            "config",
            "workdir",
            "force",
            "coordinator_address",
            "num_processes",
            "process_id",
        }
    )
    surgery = _script("surgery", "--help")
    assert surgery.startswith("usage: lowrank-jax surgery") and named(surgery) == {"config"}
    # the argparse subcommands: every option of the parser that main() dispatches with
    expected = {
        "sweep": {"--config", "--workdir", "--jobs", "--seeds", "--force", "--launcher"},
        "report": {"workdir"},
        "demo": {"--quick"},
        "tables": {"--check", "--root"},
    }
    for name, options in expected.items():
        text = _script(name, "--help")
        assert text.startswith(f"usage: lowrank-jax {name}"), name
        real_options = {o for a in commands.choices[name]._actions for o in a.option_strings}
        real_options |= {a.dest for a in commands.choices[name]._actions if not a.option_strings}
        assert options <= real_options, name
        assert all(re.search(rf"(?<![\w-]){option}\b", text) for option in real_options), name


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
