from pathlib import Path

import numpy as np

from lowrank_jax.config import load_module

RUN = Path(__file__).resolve().parents[2] / "experiments" / "performer_approximation" / "run.py"


def test_quick_form_runs_and_orders_as_expected(tmp_path):
    module = load_module(RUN)
    results = module.main(["--quick", "--out", str(tmp_path)])
    small = results[0.5]
    assert set(small) == {"positive, orthogonal", "positive, iid", "trig, orthogonal", "trig, iid"}
    positive = small["positive, orthogonal"]
    assert np.mean(positive[64]) < np.mean(positive[16])  # more features, less error
    assert all(np.isfinite(v).all() for by_m in small.values() for v in by_m.values())
