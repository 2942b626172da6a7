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

from lowrank_jax.sweeps.launch import load_sweep, product, run_sweep, with_seeds, zip_points
from lowrank_jax.sweeps.points import point_name
from lowrank_jax.sweeps.report import aggregate, label, pareto_front, read_runs, write_report

__all__ = [
    "aggregate",
    "label",
    "load_sweep",
    "pareto_front",
    "point_name",
    "product",
    "read_runs",
    "run_sweep",
    "with_seeds",
    "write_report",
    "zip_points",
]
