import json
from pathlib import Path

import numpy as np

from lowrank_jax.config import load_module

HERE = Path(__file__).resolve().parents[2] / "experiments" / "performer_approximation"
DRAWS = ("orthogonal", "iid")


def _clearly_below(low: list[float], high: list[float]) -> bool:
    """The mean of ``low`` is below that of ``high`` by more than the larger of their
    standard deviations over seeds: the README's "clear" (tables.py's ``_orthogonal``)."""
    return np.mean(high) - np.mean(low) > max(np.std(low), np.std(high))


def test_quick_form_runs_and_orders_as_the_committed_run_supports(tmp_path):
    results = load_module(HERE / "run.py").main(["--quick", "--out", str(tmp_path)])
    names = {f"{kind}, {draw}" for kind in ("positive", "trig") for draw in DRAWS}
    assert sorted(results) == [0.5, 1.0] and all(set(by) == names for by in results.values())
    for by in results.values():
        assert all(sorted(by_m) == [16, 64] for by_m in by.values())
        assert all(len(v) == 3 and np.isfinite(v).all() for m in by.values() for v in m.values())
    # The paper's claims, each asserted on the quick form's draws (L = 512, 3 seeds) only
    # where the committed run (results/mse.json: L = 4096, 15 seeds) supports it.
    committed = json.loads((HERE / "results" / "mse.json").read_text())
    assert committed["seeds"] == 15
    mse = committed["mse"]

    # more features, less error: positive features at scale 0.5 (at scale 1 the committed
    # error does not fall with M, so nothing is asserted there)
    for draw in DRAWS:
        name = f"positive, {draw}"
        assert _clearly_below(mse["0.5"][name]["64"], mse["0.5"][name]["16"])
        assert np.mean(results[0.5][name][64]) < np.mean(results[0.5][name][16])

    # at scale 1 positive features stay accurate where trigonometric ones blow up (Fig. 4):
    # every committed seed's trigonometric error is over 10x every seed's positive one
    for draw in DRAWS:
        positive, trig = f"positive, {draw}", f"trig, {draw}"
        for m in (16, 64):
            assert 10 * max(mse["1.0"][positive][str(m)]) < min(mse["1.0"][trig][str(m)])
            assert 10 * max(results[1.0][positive][m]) < min(results[1.0][trig][m])

    # orthogonal draws below iid ones: only at the scale, kind and M where the committed
    # run's difference is clear (its positive orthogonal draws even have the higher mean at
    # scale 1, M = 64)
    supported = [
        (scale, kind, m)
        for scale in results
        for kind in ("positive", "trig")
        for m in (16, 64)
        if _clearly_below(*(mse[str(scale)][f"{kind}, {draw}"][str(m)] for draw in DRAWS))
    ]
    assert supported  # (0.5, trig, 64) in the committed run
    for scale, kind, m in supported:
        orthogonal, iid = (results[scale][f"{kind}, {draw}"][m] for draw in DRAWS)
        assert np.mean(orthogonal) < np.mean(iid), (scale, kind, m)
