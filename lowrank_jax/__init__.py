"""lowrank_jax: low-rank factorization in Transformers, on JAX + Flax NNX.

Layers (``lowrank_jax.layers``): ``FactorizedDense``, ``LoRA``, ``Adapter``.
Surgery on any built model (``lowrank_jax.surgery``): ``apply_lora``,
``add_adapters``, ``factorize``, ``merge_lora``, ``count_params``.
Sweeps and their reports: ``lowrank_jax.sweeps``.
"""

import importlib
import warnings

__version__ = "0.1.0"

# Modules that moved: (old path, new path). Each old path stays for one release as a shim
# that warns (DeprecationWarning, naming the new path) and hands out the new module.
SHIMS = (
    ("lowrank_jax.sweep", "lowrank_jax.sweeps.launch"),
    ("lowrank_jax.report", "lowrank_jax.sweeps.report"),
    ("lowrank_jax.slurm", "lowrank_jax.sweeps.slurm"),
)


def moved(old: str):
    """The module that ``old`` (a path in ``SHIMS``) became, with its DeprecationWarning."""
    new = dict(SHIMS)[old]
    warnings.warn(f"{old} is deprecated: import {new}", DeprecationWarning, stacklevel=3)
    return importlib.import_module(new)
