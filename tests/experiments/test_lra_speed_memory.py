from pathlib import Path

from lowrank_jax.config import load_module

RUN = Path(__file__).resolve().parents[2] / "experiments" / "lra_speed_memory" / "run.py"


def test_quick_form_measures_every_model_against_softmax():
    module = load_module(RUN)
    result = module.main(["--quick"])
    rows = {row["model"]: row for row in result["rows"]}
    assert set(rows) == {"softmax", "softmax, FFN R=8", "linformer", "performer"}
    assert rows["softmax"]["speedup"] == 1.0 and rows["softmax"]["memory_ratio"] == 1.0
    for row in rows.values():
        assert row["step_s"] > 0 and row["bytes"] > 0
        assert row["traces"] == 1  # the timed steps reuse one compiled program
    # XLA's memory account is deterministic: no N x N scores, less memory, even at N = 64
    assert rows["linformer"]["memory_ratio"] < 1 and rows["performer"]["memory_ratio"] < 1
    (attention,) = result["attention"]
    assert attention["length"] == 64 and attention["jax_s"] > 0
