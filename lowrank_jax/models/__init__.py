"""Models: the one configurable encoder (modules) and its config.

``build_encoder(config.model)`` builds the modules; ``build.model`` adds
pretrained weights and surgery on top.
"""

from lowrank_jax.models.config import default_config, resolve_config
from lowrank_jax.models.encoder import Encoder, build_encoder, capture_intermediates

__all__ = ["Encoder", "build_encoder", "capture_intermediates", "default_config", "resolve_config"]
