from pathlib import Path

import pytest

from lowrank_jax.config import load_module

RUN = Path(__file__).resolve().parents[2] / "experiments" / "svd_compression" / "run.py"


def test_quick_form_whitened_svd_keeps_the_embeddings_closer_and_recovery_trains():
    module = load_module(RUN)
    rows = {row["method"]: row for row in module.main(["--quick"])}
    plain, whitened, recovered = rows["plain"], rows["whitened"], rows["recovered"]
    # rank 153 of 384 x 1536: 153 * (384 + 1536) / (384 * 1536) = 0.498 of each FFN kernel
    assert plain["params_kept"] == pytest.approx(0.50, abs=0.01)
    assert whitened["mean_cosine"] > plain["mean_cosine"] + 0.1
    assert 0 < plain["mean_cosine"] < 1 and whitened["mean_cosine"] < 1
    # the distillation lowers its own loss (1 - cosine on its sentences) epoch over epoch
    first, last = recovered["distill_loss"]
    assert last < first
    assert recovered["params_kept"] == whitened["params_kept"]  # the same factors, retrained
    for row in rows.values():
        assert 0 <= row["trec_probe"] <= 1 and 0 <= row["reviews_probe"] <= 1
