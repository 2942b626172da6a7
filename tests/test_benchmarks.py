"""The benchmarks' --quick forms run (speed itself is never asserted in tests)."""

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_factorized_dense_quick(tmp_path):
    out = tmp_path / "rows.json"
    rows = _load("factorized_dense").main(["--quick", "--json", str(out)])
    assert [row["rank"] for row in rows] == [8, 16]
    assert all(row["speedup"] > 0 and row["flop_ratio"] == 64 / (2 * row["rank"]) for row in rows)
    assert out.exists()
