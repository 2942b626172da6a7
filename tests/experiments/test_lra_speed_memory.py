from pathlib import Path

from lowrank_jax.config import load_module

RUN = Path(__file__).resolve().parents[2] / "experiments" / "lra_speed_memory" / "run.py"


def test_quick_form_measures_every_model_against_softmax():
    module = load_module(RUN)
    result = module.main(["--quick"])
    rows = {row["model"]: row for row in result["rows"]}
    lra = set(load_module(RUN).LRA_SETTINGS)
    assert set(rows) == {"softmax", "softmax, FFN R=8", "linformer", "performer"} | lra
    assert rows["softmax"]["speedup"] == 1.0 and rows["softmax"]["memory_ratio"] == 1.0
    base = rows["softmax"]
    for row in rows.values():  # each ratio is the softmax step's over this one's, not inverted
        assert row["speedup"] == base["step_s"] / row["step_s"]
        assert row["memory_ratio"] == row["bytes"] / base["bytes"]
        assert row["traces"] == 1  # the timed steps reuse one compiled program
    # XLA's memory account is deterministic: no N x N scores, less memory, even at N = 64
    assert rows["linformer"]["memory_ratio"] < 1 and rows["performer"]["memory_ratio"] < 1
    # and so is its FLOP count: P = 16 keys instead of N = 64, an FFN of rank 8 < 21 (break-even)
    assert rows["linformer"]["flops"] < base["flops"]
    assert rows["softmax, FFN R=8"]["flops"] < base["flops"]
    # LRA's text settings: P = 32 of N = 64, and ReLU features of q, k themselves (M = K = 8)
    assert all(rows[name]["flops"] < base["flops"] for name in lra)
    (attention,) = result["attention"]
    assert attention["length"] == 64 and attention["jax_s"] > 0
