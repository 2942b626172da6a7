"""The benchmark suite's --quick form runs end to end (speed itself is never asserted)."""

import json
from pathlib import Path

import pytest

from lowrank_jax.config import load_module

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow  # a long quick form (DEVELOPERS.md)
def test_quick_suite_reports_every_target(tmp_path):
    module = load_module(BENCHMARKS / "run.py")
    rows = module.main(["--quick", "--out", str(tmp_path)])
    numbers = {row["target"].split(".")[0] for row in rows}
    assert {"1", "2", "3", "4", "7"} <= numbers
    assert all(row["status"] in ("pass", "falls short", "—") for row in rows)
    # the trainer's loop: one trace, no implicit host<->device transfer (not a timing)
    (loop,) = [row for row in rows if row["target"].startswith("7.")]
    assert loop["status"] == "pass", loop["measured"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows)) and "jax" in saved["machine"]
    assert (tmp_path / "results.md").read_text().count("\n| ") == len(rows) + 1
