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


@pytest.mark.slow  # a long quick form (DEVELOPERS.md)
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


def _runs_csv(folder: Path, rows: list[dict]) -> None:
    import csv

    from lowrank_jax.sweeps.report import COLUMNS

    path = folder / "results" / "regularisation" / "runs.csv"
    path.parent.mkdir(parents=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=("seed", *COLUMNS), restval="")
        writer.writeheader()
        writer.writerows(rows)


def _run(seed, test, final_gap, ffn_rank="", qkv_rank="", params=1000):
    return {
        "seed": seed,
        "name": f"r{ffn_rank}{qkv_rank},seed={seed}",
        "attention": "softmax",
        "ffn_rank": ffn_rank,
        "qkv_rank": qkv_rank,
        "params_total": params,
        "train_accuracy": test + 0.1,
        "test_accuracy": test,
        "train_test_gap": 0.1,
        "final_train_accuracy": test + final_gap,
        "final_test_accuracy": test,
        "final_train_test_gap": final_gap,
        "status": "done",
    }


def test_regularisation_verdicts_read_the_welch_intervals(tmp_path):
    tables = load_module(ROOT / "experiments" / "seed_claims" / "tables.py")
    dense = [_run(s, t, g) for s, t, g in ((0, 0.70, 0.30), (1, 0.71, 0.29), (2, 0.69, 0.31))]
    # rank 2: overfits less (a clearly smaller gap) but generalises worse (clearly lower test)
    low = [
        _run(s, t, g, ffn_rank=2) for s, t, g in ((0, 0.60, 0.05), (1, 0.61, 0.04), (2, 0.59, 0.06))
    ]
    # Q/K/V rank 8: the same as dense within noise
    same = [
        _run(s, t, g, qkv_rank=8) for s, t, g in ((0, 0.72, 0.32), (1, 0.68, 0.28), (2, 0.70, 0.30))
    ]
    _runs_csv(
        tmp_path, dense + low + same + [{**_run(3, 0.9, 0.0, ffn_rank=2), "status": "failed: x"}]
    )
    table = tables.regularisation(tmp_path)
    lines = table.splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| dense",
        "| factorized FFN R = 2",
        "| factorized Q/K/V/out R = 8",
    ]
    assert lines[3].endswith("| supported | refuted |")  # the failed run is not counted
    assert " 3 | 0.600 ± 0.025 |" in lines[3]  # 3 seeds; t(0.975, 2) * 0.01 / sqrt(3) = 0.025
    assert lines[4].endswith("| undecided | undecided |")
    answer = " ".join(tables.regularisation_answer(tmp_path).split())  # unwrapped
    assert "supported at factorized FFN R = 2 (-0.250 ±" in answer
    assert '"reduces overfitting" is supported at some ranks, undecided at the others' in answer
    assert '"improves generalisation" is refuted at some ranks, undecided at the others' in answer
