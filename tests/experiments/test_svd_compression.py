from pathlib import Path

import pytest

from lowrank_jax.config import load_module

RUN = Path(__file__).resolve().parents[2] / "experiments" / "svd_compression" / "run.py"


@pytest.mark.slow  # a long quick form (DEVELOPERS.md)
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


def test_the_linear_probe_separates_what_is_separable_and_not_noise():
    import numpy as np

    probe = load_module(RUN).probe_accuracy
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16)) * 3.0
    labels = rng.integers(0, 3, 600)
    x = centers[labels] + rng.normal(size=(600, 16))
    assert probe(x[:400], labels[:400], x[400:], labels[400:]) > 0.95  # separable classes
    noise = rng.integers(0, 3, 600)  # labels that the features do not carry
    assert abs(probe(x[:400], noise[:400], x[400:], noise[400:]) - 1 / 3) < 0.1


@pytest.mark.slow  # a long quick form (DEVELOPERS.md)
def test_budget_quick_form_spends_the_same_budget_three_ways():
    budget = load_module(RUN.with_name("budget.py"))
    rows = budget.main(["--quick", "--targets", "ffn"])
    by = {row["method"]: row for row in rows}
    assert set(by) == {"original", *budget.METHODS}
    for method in budget.METHODS:  # half of the FFN weights (biases unchanged), each way
        assert by[method]["params_kept"] == pytest.approx(0.5, abs=0.005)
    assert len(set(by["uniform whitened"]["ranks"].values())) == 1  # one rank everywhere
    assert len(set(by["greedy whitened"]["ranks"].values())) > 1  # ranks of their own
    assert by["uniform whitened"]["mean_cosine"] > by["uniform plain"]["mean_cosine"]


@pytest.mark.slow  # a long quick form (DEVELOPERS.md)
def test_recovery_quick_form_keeps_the_best_validation_epoch(tmp_path, capsys):
    recover = load_module(RUN.with_name("recover.py"))
    result = recover.main(["--quick", "--workdir", str(tmp_path)])
    assert len(result["seeds"]) == 2
    for seed in result["seeds"]:
        losses = [h["val_loss"] for h in seed["history"]]
        assert seed["best_epoch"] == losses.index(min(losses))  # the kept model is the best
        assert seed["params_kept"] == pytest.approx(0.5, abs=0.005)
        assert 0 < seed["mean_cosine"] <= 1 and seed["min_cosine"] <= seed["mean_cosine"]
        assert all(0 < h["held_out_cosine"] <= 1 for h in seed["history"][1:])  # every epoch's
    assert set(result["original"]) == {"trec_probe", "reviews_probe"}
    capsys.readouterr()
    again = recover.main(["--quick", "--workdir", str(tmp_path)])  # from the epochs' checkpoints
    printed = capsys.readouterr().out
    assert "seed 1: resuming after epoch" in printed and " epoch 1: train" not in printed
    assert again["seeds"] == result["seeds"]  # the same history, and the same best model kept
    with pytest.raises(SystemExit, match="other settings"):  # never mixes two runs' epochs
        recover.main(["--quick", "--workdir", str(tmp_path), "--window", "2"])
    longer = recover.main(["--quick", "--workdir", str(tmp_path), "--max-epochs", "3"])
    for seed, before in zip(longer["seeds"], result["seeds"], strict=True):
        assert seed["history"][:3] == before["history"]  # a longer cap goes on from epoch 2
        assert len(seed["history"]) == (4 if before["best_epoch"] else 3)  # or patience ends


def test_recovery_epochs_cover_every_sentence_once_in_batches_of_similar_length():
    import numpy as np

    epoch_batches = load_module(RUN.with_name("recover.py")).epoch_batches
    lengths = np.random.default_rng(1).integers(5, 200, 1000)
    batches = epoch_batches(np.random.default_rng(0), lengths, 32, 8)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))  # each once
    assert [len(b) for b in batches].count(32) == 31  # and the remainder, 8
    again = epoch_batches(np.random.default_rng(0), lengths, 32, 8)
    assert all((a == b).all() for a, b in zip(batches, again, strict=True))  # the seed's order
    plain = epoch_batches(np.random.default_rng(0), lengths, 32, 1)  # window 1: random batches
    longest = {w: np.mean([lengths[b].max() for b in bs]) for w, bs in ((8, batches), (1, plain))}
    assert longest[8] < 0.8 * longest[1]
