"""Training: one trainer, one jitted step, sharding, checkpoints, metrics."""
