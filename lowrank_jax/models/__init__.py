"""Models: the one configurable encoder (``encoder.build_encoder``)."""

from lowrank_jax.models.encoder import Encoder, build_encoder, default_config, resolve_config

__all__ = ["Encoder", "build_encoder", "default_config", "resolve_config"]
