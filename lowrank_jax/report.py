"""Moved to ``lowrank_jax.sweeps.report``: this path warns and stays for one release."""

import sys

from lowrank_jax import moved

if __name__ != "__main__":
    sys.modules[__name__] = moved(__name__)
