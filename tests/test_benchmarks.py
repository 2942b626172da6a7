"""The benchmark suite's --quick form runs end to end (speed itself is never asserted)."""

import json
from pathlib import Path

import pytest

from lowrank_jax.config import load_module

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def verdict(checks):
    """The status a row's checks give, computed here, apart from benchmarks/common.py."""
    if checks is None:
        return "—"
    holds = {"<=": lambda v, b: v <= b, ">=": lambda v, b: v >= b, "==": lambda v, b: v == b}
    return "pass" if all(holds[op](v, b) for _, v, op, b in checks) else "falls short"


def test_a_verdict_follows_its_checks():
    common = load_module(BENCHMARKS / "common.py")
    row = common.target("x", "0.8×", "≤ 0.75×", [("ratio", 0.8, "<=", 0.75)])
    assert row["status"] == "falls short"
    row = common.target("x", "", "", [("ratio", 0.7, "<=", 0.75), ("mfu", 0.4, ">=", 0.5)])
    assert row["status"] == "falls short"  # every check must hold
    row = common.target("x", "", "", [("ratio", 0.75, "<=", 0.75), ("mfu", 0.5, ">=", 0.5)])
    assert row["status"] == "pass"  # a bound is met at equality
    assert common.target("x", "peer not installed", "≤ 1.0×", None)["status"] == "—"


@pytest.mark.slow  # a long quick form (DEVELOPERS.md)
def test_quick_suite_reports_every_target(tmp_path):
    module = load_module(BENCHMARKS / "run.py")
    rows = module.main(["--quick", "--out", str(tmp_path)])
    numbers = {row["target"].split(".")[0] for row in rows}
    assert {"1", "2", "3", "4", "7"} <= numbers
    assert all(row["status"] in ("pass", "falls short", "—") for row in rows)
    for row in rows:
        assert row["status"] == verdict(row["checks"]), row
        for _, _, op, bound in row["checks"] or []:  # the goal the row shows is the one checked
            if op != "==":
                shown = f"{bound * 100:g}%" if "%" in row["goal"] else f"{bound:g}"
                assert f"{'≤' if op == '<=' else '≥'} {shown}" in row["goal"], row
    # the trainer's loop: one trace, no implicit host<->device transfer (not a timing)
    (loop,) = [row for row in rows if row["target"].startswith("7.")]
    assert loop["status"] == "pass", loop["measured"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows)) and "jax" in saved["machine"]
    assert (tmp_path / "results.md").read_text().count("\n| ") == len(rows) + 1
