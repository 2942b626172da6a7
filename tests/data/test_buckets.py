"""Length buckets: a batch cut to the smallest bucket that holds it, the same training."""

import numpy as np
import pytest
from ml_collections import ConfigDict

from lowrank_jax import data
from lowrank_jax.config import ConfigError, load_config
from lowrank_jax.data import buckets
from lowrank_jax.train.trainer import train_and_evaluate


@pytest.mark.parametrize(
    "value", [(32, 16), (16, 16), (0, 16), (16, 128), "16,32", (16.0,), (True,), 16]
)
def test_bad_buckets_are_one_line_naming_the_field(value):
    with pytest.raises(ConfigError, match=r"^data\.buckets: must be increasing integers"):
        buckets.check(ConfigDict({"max_len": 64, "buckets": value}))


def test_a_batch_is_cut_to_the_bucket_of_its_longest_example():
    assert buckets.check(ConfigDict({"max_len": 64, "buckets": [16, 32]})) == (16, 32)
    assert [buckets.length_of(n, (16, 32), 64) for n in (0, 1, 16, 17, 32, 33, 64)] == [
        16, 16, 16, 32, 32, 64, 64
    ]  # fmt: skip
    lengths = np.array([3, 20, 9])
    mask = np.arange(64) < lengths[:, None]
    batch = {"tokens": np.where(mask, 7, 0), "mask": mask, "label": np.array([0, 1, 2])}
    cut = buckets.trim(batch, (16, 32), 64)
    assert cut["tokens"].shape == cut["mask"].shape == (3, 32)
    assert (cut["mask"].sum(1) == lengths).all() and (cut["label"] == batch["label"]).all()
    assert buckets.trim(batch, (8, 16), 64)["tokens"].shape == (3, 64)  # past every bucket


def _config(lengths):
    config = load_config("configs/tiny.py:runlocal")
    config.data.update(min_len=2, buckets=lengths)
    config.model.dropout = 0.0  # dropout's masks are drawn per shape
    config.train.update(steps=12, batch_size=8, log_every=1, eval_every=6, eval_batches=2)
    config.train.update(checkpoint_every=12, peak_flops=1e12, train_eval_batches=1)
    return config


def test_buckets_train_the_same_model_with_less_padding_and_a_trace_per_bucket(tmp_path):
    config = _config((48, 56))
    source = data.make_source(config.data, split="train", batch_size=8, rows=np.arange(8), seed=0)
    seen = {next(source)["tokens"].shape[1] for _ in range(12)}
    assert seen == {48, 56, 64}  # this seed's 12 batches reach every bucket
    fixed = train_and_evaluate(_config(()), tmp_path / "fixed")
    bucketed = train_and_evaluate(config, tmp_path / "bucketed")
    assert fixed["step_traces"] == 1 and bucketed["step_traces"] == len(seen)
    assert bucketed["padding_fraction"] < fixed["padding_fraction"]
    # padding adds exact zeros, so only the order of the sums differs: ~√(8·64)·u = 1.4e-6
    # relative a step, rounding at random (u = 2^-24), passed on unamplified by Adam's
    # normalised steps; 12 stable steps -> <~ 2e-5 of the loss, rel 1e-4 leaves margin
    for key in ("final_train_loss", "final_val_loss", "test_loss"):
        assert bucketed[key] == pytest.approx(fixed[key], rel=1e-4), key


_TWO_PROCESSES = """
import sys
import jax
import numpy as np
jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
from lowrank_jax.data import buckets
longest = 10 if jax.process_index() == 0 else 40  # this process's rows of one global batch
batch = {"tokens": np.ones((2, 64), np.int32), "mask": np.arange(64) < np.array([[3], [longest]])}
print("length", buckets.trim(batch, (16, 48), 64)["tokens"].shape[1])
"""


@pytest.mark.slow
def test_two_processes_agree_on_a_batch_length(two_processes):
    outputs = two_processes(_TWO_PROCESSES)
    # process 0 alone would cut to 16; both take the bucket of the global longest, 48
    assert [out.splitlines()[-1] for out in outputs] == ["length 48", "length 48"]
