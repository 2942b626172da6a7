"""lowrank_jax: low-rank factorization in Transformers, on JAX + Flax NNX.

Layers (``lowrank_jax.layers``): ``FactorizedDense``, ``LoRA``, ``Adapter``.
Surgery on any built model (``lowrank_jax.surgery``): ``apply_lora``,
``add_adapters``, ``factorize``, ``merge_lora``, ``count_params``.
Sweeps and their reports: ``lowrank_jax.sweeps``.
"""

import importlib
import warnings

__version__ = "0.1.0"

# Modules and names that moved: (old path, new path; ``module:name`` for a name). Each old
# path stays for one release as a shim that warns (DeprecationWarning, naming the new path)
# and hands out the new module or name.
SHIMS = (
    ("lowrank_jax.sweep", "lowrank_jax.sweeps.launch"),
    ("lowrank_jax.report", "lowrank_jax.sweeps.report"),
    ("lowrank_jax.slurm", "lowrank_jax.sweeps.slurm"),
    *(
        (f"lowrank_jax.build.{name}", f"lowrank_jax.train.state:{name}")
        for name in (
            "load_model",
            "model_and_optimizer",
            "params_sha256",
            "single_device_mesh",
            "train_state",
            "TrainState",
            "validate",
        )
    ),
)


def moved(old: str):
    """What ``old`` (a path in ``SHIMS``) became, with its DeprecationWarning."""
    new = dict(SHIMS)[old]
    shown = new.replace(":", ".")
    warnings.warn(f"{old} is deprecated: import {shown}", DeprecationWarning, stacklevel=3)
    module, _, name = new.partition(":")
    module = importlib.import_module(module)
    return getattr(module, name) if name else module
