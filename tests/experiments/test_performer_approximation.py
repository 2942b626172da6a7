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
    # the paper's two claims, on the quick form's seeded draws: orthogonal features lower the
    # positive estimator's error at every scale and M, and at the larger scale the positive
    # features stay accurate where the trigonometric ones blow up (Fig. 4)
    for by in results.values():
        for m in (16, 64):
            assert np.mean(by["positive, orthogonal"][m]) < np.mean(by["positive, iid"][m])
    large = results[max(results)]
    for m in (16, 64):
        assert 10 * np.mean(large["positive, orthogonal"][m]) < np.mean(
            large["trig, orthogonal"][m]
        )
