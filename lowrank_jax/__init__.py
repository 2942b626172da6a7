"""lowrank_jax: low-rank factorization in Transformers, on JAX + Flax NNX.

Layers (``lowrank_jax.layers``): ``FactorizedDense``, ``LoRA``, ``Adapter``.
Surgery on any built model (``lowrank_jax.surgery``): ``apply_lora``,
``add_adapters``, ``factorize``, ``merge_lora``, ``count_params``.
"""

__version__ = "0.1.0"
