"""The benchmark suite's --quick form runs end to end (speed itself is never asserted), and
every verdict its README tables print flips with the results behind it."""

import json
from pathlib import Path

import pytest

from lowrank_jax.config import load_module

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TABLES = load_module(BENCHMARKS / "tables.py")


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


def _row(target, status="pass", **data):
    return {"target": target, "measured": "1.0×", "goal": "≤ 1.0×", "status": status, **data}


def _results(rows, backend="cpu", peer_device=None, **extra):
    machine = {"device": backend, "backend": backend, "jax": "0", "torch": "0", "torch_threads": 2}
    if peer_device is not None:
        machine["peer_device"] = peer_device
    return {"date": "2026-01-01", "machine": machine, "rows": rows, **extra}


def _write(folder, name, results):
    (folder / "results").mkdir(exist_ok=True)
    (folder / "results" / f"{name}.json").write_text(json.dumps(results))


def test_a_row_against_a_peer_on_another_device_is_void():
    row = _row("3. exact attention vs SDPA", peer="PyTorch SDPA")
    on_gpu = _results([row], backend="gpu", peer_device="cuda")
    assert TABLES.status(row, on_gpu) == "pass"
    on_cpu = _results([row], backend="gpu", peer_device="cpu")
    assert TABLES.status(row, on_cpu) == "void: the peer ran on the CPU, ours on the GPU"
    ours_only = _row("1. factorized vs dense", peer=None)
    assert TABLES.status(ours_only, on_cpu) == "pass"
    # a GPU file that never recorded where its peers ran says so
    assert "not recorded" in TABLES.status(row, _results([row], backend="gpu"))


def test_an_older_file_s_best_exact_rests_on_the_peer_only_where_sdpa_was_fastest():
    def results(sdpa):
        exact = {"n": 16384, "xla": {"seconds": 0.02, "bytes": 1}, "sdpa": sdpa}
        three = _row("3. exact attention vs SDPA", rows=[exact])
        return _results([three, best], backend="gpu", peer_device="cpu")

    best = _row("4. N=16384: Linformer / Performer vs best exact", status="—")  # no "peer" key
    assert TABLES.status(best, results(sdpa=5.0)) == "—"  # XLA's was the best exact
    assert TABLES.status(best, results(sdpa=0.01)).startswith("void")  # SDPA's was
    missing = _row("6. Performer mixer vs performer-pytorch", status="—")  # peer not installed
    assert TABLES.status(missing, results(sdpa=5.0)) == "—"


def test_the_load_recorded_around_a_run_decides_nothing_else_running(tmp_path):
    rows = [_row("1. factorized vs dense")]
    texts = {}
    for name, load in (("quiet", [0.1, 0.2, 0.3]), ("busy", [1.5, 1.2, 0.9])):
        _write(tmp_path, name, _results(rows, load={"before": load, "after": [1.0] * 3}))
        texts[name] = TABLES.targets(tmp_path, name).splitlines()[0]
    _write(tmp_path, "old", _results(rows))
    assert "0.10 / 0.20 / 0.30 before" in texts["quiet"]
    assert texts["quiet"].endswith("after: nothing else running.")
    assert "other work running (1-minute load 1.50" in texts["busy"]
    assert TABLES.targets(tmp_path, "old").splitlines()[0].endswith("; load not recorded.")


def test_shortfalls_follow_the_rows_verdicts(tmp_path):
    for name, status in (("short", "falls short"), ("passing", "pass")):
        rows = [_row("1. a", status), _row("1. b"), _row("7. c"), _row("9. d", "—")]
        _write(tmp_path, name, _results(rows))
    short = TABLES.shortfalls(tmp_path, "short")
    assert "a row falls short in target 1;" in short and "passes in target 7;" in short
    assert "passes in targets 1 and 7;" in TABLES.shortfalls(tmp_path, "passing")
    assert "no verdict (reported only, not run or void) in target 9." in short


def test_changes_pair_renumbered_targets_and_show_each_run_s_verdict(tmp_path):
    before = _results([_row("18. DoRA vs LoRA", "falls short")], date="2026-01-01")
    _write(tmp_path, "before", before)
    _write(tmp_path, "after", _results([_row("9. DoRA vs LoRA")], date="2026-02-01"))
    table = TABLES.changes(tmp_path, "before", "after")
    assert "| target | 2026-01-01 | 2026-02-01 |" in table
    assert "| 9. DoRA vs LoRA | 1.0× (falls short) | 1.0× (pass) |" in table


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
    assert len(saved["load"]["before"]) == len(saved["load"]["after"]) == 3 and saved["date"]
    assert all("peer" in row for row in rows)  # the tables void a peer's row from it
    assert (tmp_path / "results.md").read_text().count("\n| ") == len(rows) + 1
