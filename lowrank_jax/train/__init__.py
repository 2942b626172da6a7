"""Training: one trainer (``trainer.train_and_evaluate``), one jitted step, sharding, checkpoints, metrics."""
