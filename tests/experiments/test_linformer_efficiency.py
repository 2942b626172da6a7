from pathlib import Path

import pytest

from lowrank_jax.config import load_module

RUN = Path(__file__).resolve().parents[2] / "experiments" / "linformer_efficiency" / "run.py"


@pytest.mark.slow  # a long quick form (DEVELOPERS.md)
def test_quick_form_compares_every_projection_with_softmax():
    module = load_module(RUN)
    rows = module.main(["--quick"])
    assert [(r["length"], r["proj_len"]) for r in rows] == [
        (64, 16),
        (64, 32),
        (128, 16),
        (128, 32),
    ]
    by = {(r["length"], r["proj_len"]): r for r in rows}
    # memory (XLA's compiled account) is deterministic: a shorter projection saves more,
    # and the saving grows with N at a fixed P, as N^2 scores give way to N x P
    assert by[128, 16]["memory_saved"] > by[128, 32]["memory_saved"] > 1
    assert by[128, 16]["memory_saved"] > by[64, 16]["memory_saved"]
    # time saved is the softmax forward's time over the Linformer's (a ratio, not asserted)
    assert all(r["time_saved"] == r["softmax_s"] / r["linformer_s"] for r in rows)
    # XLA's FLOP count is deterministic: scores N x P instead of N x N, so a shorter projection
    # saves more, and at a fixed P the saving grows with N
    flops = {k: r["softmax_flops"] / r["linformer_flops"] for k, r in by.items()}
    assert flops[128, 16] > flops[128, 32] > 1
    assert flops[128, 16] > flops[64, 16]
