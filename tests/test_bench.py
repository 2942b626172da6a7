"""Measuring helpers: compiled memory without allocating, and the largest batch that fits."""

from lowrank_jax import bench


def test_largest_batch_fits_and_one_more_does_not():
    model = bench.lra_text_config(64, tiny=True)
    limit = 3 * 2**20
    batch = bench.largest_batch(model, 64, limit)
    assert batch > 2
    assert (
        bench.forward_bytes(model, batch, 64) <= limit < bench.forward_bytes(model, batch + 1, 64)
    )
    assert bench.largest_batch(model, 64, 1000) == 0  # not even one example fits
