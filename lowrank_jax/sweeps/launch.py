"""Sweeps: a grid of dotted config overrides, one run (sub-workdir) per point, resumable.

A config file may define ``get_sweep(arg) -> list[dict]`` next to ``get_config``;
each dict maps dotted config fields to values (``{"model.ffn.dense.rank": 8}``).
``product`` and ``zip_points`` build such lists. ``run_sweep`` trains every point
through ``lowrank-jax train`` in its own process, in ``workdir/<point name>``,
each with seeds ``0..N-1`` for ``--seeds N`` (``seed=i`` in the name): a point
already finished with the same config is recognised in the sweep process and
not retrained ("done", no process started), an
interrupted one resumes from its checkpoints, one whose directory holds
another config fails unless ``--force``, a failed one is recorded in
``failed.json`` and the sweep goes on.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
from pathlib import Path

from lowrank_jax.config import ConfigError, check_choice, check_int, load_config
from lowrank_jax.sweeps import slurm as cluster
from lowrank_jax.sweeps.points import Point, overridden, print_results, run_point
from lowrank_jax.sweeps.points import apply_point as apply_point  # re-exported: the sweep's API
from lowrank_jax.sweeps.points import expected_config as expected_config
from lowrank_jax.sweeps.points import finished as finished
from lowrank_jax.sweeps.points import point_name as point_name
from lowrank_jax.train.lock import RunLock

LAUNCHERS = ("local", "slurm")


def product(**axes: list) -> list[Point]:
    """Every combination of the axes' values; keys are dotted config fields.

    Example:
      >>> product(**{"seed": [0, 1], "model.lora.rank": [8]})
      [{'seed': 0, 'model.lora.rank': 8}, {'seed': 1, 'model.lora.rank': 8}]
    """
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]


def zip_points(**axes: list) -> list[Point]:
    """Points taken in lockstep from equally long axes.

    Example:
      >>> zip_points(a=[1, 2], b=[3, 4])
      [{'a': 1, 'b': 3}, {'a': 2, 'b': 4}]
    """
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in zip(*axes.values(), strict=True)]


def with_seeds(points: list[Point], seeds: int | None) -> list[Point]:
    """Every point once per seed ``0..seeds-1``; a point that sets ``seed`` is kept as it is.

    ``seeds=None`` leaves the points alone (run names without a seed).

    Example:
      >>> with_seeds([{"model.ffn.dense.rank": 8}, {"seed": 7}], 2)
      [{'model.ffn.dense.rank': 8, 'seed': 0}, {'model.ffn.dense.rank': 8, 'seed': 1}, {'seed': 7}]
    """
    if seeds is None:
        return list(points)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"--seeds: must be an integer >= 1, got {seeds!r}")
    return [
        p
        for point in points
        for p in (
            [point] if "seed" in point else [{**point, "seed": seed} for seed in range(seeds)]
        )
    ]


def load_sweep(config_spec: str) -> list[Point]:
    """``get_sweep(arg)`` of the config file in ``path[:arg]``: a list of dicts.

    The file is the user's input: a syntax error in it, an exception from its
    ``get_sweep`` or a point that is not a dict is one line naming the file.
    """
    path = config_spec.partition(":")[0]
    try:
        points = load_config(config_spec, "get_sweep")
    except ConfigError:
        raise
    except Exception as error:  # the user's file failed: say where, in one line
        raise ConfigError(f"--config: {path}: {type(error).__name__}: {error}") from None
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise ConfigError(f"--config: {path}: get_sweep must return a list of dicts")
    return points


def run_sweep(
    config_spec: str,
    workdir: str | Path,
    *,
    jobs: int = 1,
    extra: list[str] = (),
    seeds: int | None = None,
    launcher: str = "local",
    slurm=None,
    wait: bool = True,
) -> list[dict]:
    """Run every point of the config's sweep; a line per point.

    ``launcher="local"``: each point in its own process here, ``jobs`` at a time.
    ``"slurm"``: the points still to do as one SLURM job array (``slurm.Options``
    says where and how; ``wait=False`` returns once it is submitted). ``seeds``:
    every point with seeds ``0..seeds-1`` (``with_seeds``). A point whose run
    already finished with this very config is recognised here, without a process.
    Every flag in ``extra`` is checked before anything starts (``overridden``).
    """
    workdir = Path(workdir)
    check_int(jobs, "--jobs")
    check_choice(launcher, "--launcher", LAUNCHERS)
    points = with_seeds(load_sweep(config_spec), seeds)
    names = [point_name(p) for p in points]
    if len(set(names)) != len(names):
        raise ConfigError("--config: get_sweep returned the same point twice")
    overridden(config_spec, list(extra))  # a flag no point can use: one line, nothing started
    if launcher == "slurm":
        cluster.check_commands()
    with RunLock(workdir, "sweep"):  # one sweep per directory; its points lock their own
        record = {"config": config_spec, "points": points, "extra": list(extra), "seeds": seeds}
        (workdir / "sweep.json").write_text(
            json.dumps({**record, "launcher": launcher}, indent=1) + "\n"
        )
        if launcher == "local":
            return _run_points(config_spec, workdir, points, jobs, list(extra))
        results = cluster.run(config_spec, workdir, points, list(extra), slurm, wait=wait)
        jobs_ids = [job["job_id"] for job in cluster.read_jobs(workdir)]
        (workdir / "sweep.json").write_text(
            json.dumps({**record, "launcher": launcher, "slurm_jobs": jobs_ids}, indent=1) + "\n"
        )
        print_results(results, len(points))
        return results


def _run_points(config_spec, workdir: Path, points, jobs: int, extra: list[str]) -> list:
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
        futures = [pool.submit(run_point, config_spec, workdir, p, list(extra)) for p in points]
        for future in concurrent.futures.as_completed(futures):
            results.append(future.result())
            print_results(results[-1:], len(points), first=len(results))
    return results
