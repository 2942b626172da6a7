import ml_collections
import numpy as np
import pytest

from lowrank_jax import data
from lowrank_jax.data import synthetic

CFG = ml_collections.ConfigDict(
    {"name": "synthetic", "vocab_size": 32, "num_classes": 4, "max_len": 24, "min_len": 8}
)


def test_batches_are_deterministic_padded_and_labelled_correctly():
    batch = synthetic.make_batch(0, "train", 5, 16, CFG)
    again = synthetic.make_batch(0, "train", 5, 16, CFG)
    for key in batch:
        np.testing.assert_array_equal(batch[key], again[key])
    assert not np.array_equal(
        batch["tokens"], synthetic.make_batch(0, "validation", 5, 16, CFG)["tokens"]
    )
    tokens, mask = batch["tokens"], batch["mask"]
    assert (tokens[~mask] == 0).all() and (tokens[mask] > 0).all() and (mask.sum(1) >= 8).all()
    for row, label in zip(tokens, batch["label"], strict=True):
        counts = [(row == c).sum() for c in range(1, 5)]
        assert label == int(np.argmax(counts))


def test_source_rows_and_state():
    rows = np.array([2, 3])
    source = data.make_source(CFG, split="train", batch_size=4, rows=rows, seed=1)
    first = next(source)
    assert first["tokens"].shape == (2, 24)
    np.testing.assert_array_equal(
        first["tokens"], synthetic.make_batch(1, "train", 0, 4, CFG)["tokens"][2:]
    )
    next(source)
    state = source.get_state()
    third = next(source)
    source.set_state(state)
    np.testing.assert_array_equal(next(source)["tokens"], third["tokens"])


def test_check_names_fields():
    with pytest.raises(
        ValueError,
        match=r"^data\.name: must be one of fashion_mnist, listops, listops_small, "
        r"reviews, sms_spam, synthetic, trec, got 'lra'",
    ):
        data.check(ml_collections.ConfigDict({**CFG.to_dict(), "name": "lra"}))
    with pytest.raises(
        ValueError,
        match=r"^data\.num_classes: must be an integer in \[2, 30\] \(data\.vocab_size - 2\)",
    ):
        data.check(ml_collections.ConfigDict({**CFG.to_dict(), "num_classes": 31}))
