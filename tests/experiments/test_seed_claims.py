from pathlib import Path

import pytest

from lowrank_jax.config import load_module

ROOT = Path(__file__).resolve().parents[2]
LATENCY = ROOT / "experiments" / "seed_claims" / "latency.py"


def test_break_even_and_crossing():
    latency = load_module(LATENCY)
    # MiniLM's FFN: a rank-307.2 pair has as many weights as the 384 x 1536 matrix
    assert latency.break_even(384, 1536) == pytest.approx(307.2)
    d, f = 384, 1536
    r = latency.break_even(d, f)
    assert r * (d + f) == pytest.approx(d * f)
    # the first upward crossing of 1, interpolated; none when every rank is below (or above)
    assert latency.crossing([16, 32, 64], [0.4, 0.9, 1.1]) == pytest.approx(48.0)
    assert latency.crossing([16, 32, 64], [0.4, 1.1, 0.9]) == pytest.approx(16 + 0.6 / 0.7 * 16)
    assert latency.crossing([16, 32], [0.4, 0.9]) is None
    assert latency.crossing([16, 32], [1.2, 1.4]) is None


def test_quick_form_times_every_rank_against_dense(tmp_path):
    latency = load_module(LATENCY)
    out = tmp_path / "latency.json"
    record = latency.main(["--quick", "--rounds", "1", "--repeats", "1", "--out", str(out)])
    assert out.exists()
    assert record["flop_break_even"] == pytest.approx(32 * 64 / 96)
    assert [row["batch"] for row in record["rows"]] == [1, 32]
    for row in record["rows"]:
        assert list(row["ratio_to_dense"]) == [str(r) for r in latency.QUICK_RANKS]
        for rank, ratio in row["ratio_to_dense"].items():
            assert ratio == pytest.approx(row["s_per_example"][rank] / row["dense_s_per_example"])
    # the models timed are what they say: a factorized FFN of each rank, else dense
    config = latency.model_config(8, quick=True)
    assert (config.ffn.dense.kind, config.ffn.dense.rank) == ("factorized", 8)
    assert latency.model_config(0, quick=True).ffn.dense.kind == "dense"
