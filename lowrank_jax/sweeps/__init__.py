"""Sweeps: many runs of one config, launched, resumed and read back.

- ``points``: a point (dotted overrides) -> its run directory, its expected config,
  whether it is finished, and one ``lowrank-jax train`` process for it;
- ``launch``: ``get_sweep`` lists, ``product`` / ``zip_points`` / ``with_seeds``, and
  ``run_sweep`` (local processes, ``jobs`` at a time, or ``slurm``);
- ``slurm``: one SLURM job array per sweep, and the array task's runner;
- ``report``: tables of a sweep's run directories (``write_report``), with ``stats``
  (intervals over seeds, the verdicts read from them, convergence) and ``plots``.

May import ``config`` and ``train`` (run files, locks); nothing imports ``sweeps``
but the CLI and the experiments.
"""

import importlib

# The sweep API, each name from its module. Imported on first use: ``python -m
# lowrank_jax.sweeps.slurm`` (a SLURM array task) then runs a module that nothing has
# imported yet, and reading a sweep's intervals does not import the plotting library.
_EXPORTS = {
    "load_sweep": "launch",
    "product": "launch",
    "run_sweep": "launch",
    "with_seeds": "launch",
    "zip_points": "launch",
    "point_name": "points",
    "aggregate": "report",
    "label": "report",
    "pareto_front": "report",
    "read_runs": "report",
    "write_report": "report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
