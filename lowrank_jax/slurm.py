"""Moved to ``lowrank_jax.sweeps.slurm``: this path warns and stays for one release."""

import sys

from lowrank_jax import moved

if __name__ != "__main__":
    sys.modules[__name__] = moved(__name__)
else:  # array scripts written before the move run ``python -m lowrank_jax.slurm task ...``
    import runpy

    moved("lowrank_jax.slurm")
    runpy.run_module("lowrank_jax.sweeps.slurm", run_name="__main__")
