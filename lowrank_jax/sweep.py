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

import ast
import concurrent.futures
import itertools
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lowrank_jax.config import (
    ConfigError,
    check_choice,
    check_int,
    load_config,
    unknown_override,
)
from lowrank_jax.train.lock import RunLock
from lowrank_jax.train.metrics import read_json
from lowrank_jax.train.rundir import same_config

Point = dict[str, Any]
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


def point_name(point: Point) -> str:
    """A directory name made of a point's overrides (``model.`` dropped, sorted).

    Example:
      >>> point_name({"model.ffn.dense.rank": 8, "model.attention.kind": "performer"})
      'attention.kind=performer,ffn.dense.rank=8'
    """
    if not point:
        return "base"
    parts = []
    for key in sorted(point):
        short = key.removeprefix("model.")
        parts.append(f"{short}={point[key]}")
    return re.sub(r"[^\w.=,+-]", "_", ",".join(parts))


def apply_point(config, point: Point):
    """``config`` with the point's dotted overrides set (in place; returned for chaining).

    The in-process twin of the ``--config.KEY=VALUE`` flags ``run_sweep`` passes.

    Example:
      >>> import ml_collections
      >>> c = ml_collections.ConfigDict({"model": {"ffn": {"rank": 0}}})
      >>> apply_point(c, {"model.ffn.rank": 8}).model.ffn.rank
      8
    """
    for key, value in point.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


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


def _typed(text: str, like: Any) -> Any:
    """A ``--config.FIELD=TEXT`` value read as the field's current type."""
    if isinstance(like, bool):
        return text.lower() in ("true", "1")
    if isinstance(like, int | float | str):
        return type(like)(text)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def overridden(config_spec: str, extra: list[str]):
    """The config with the sweep's ``--config.FIELD=VALUE`` flags applied; ``ConfigError``
    (one line) for a flag the sweep cannot pass on: not an override, an unknown field,
    or a value that does not read as the field's type."""
    config = load_config(config_spec)
    for flag in extra:
        if flag == "--force":
            continue
        match = re.match(r"^--config\.([\w.]+)=(.*)$", flag)
        if not match:
            raise ConfigError(
                f"{flag.split('=')[0]}: not a flag of lowrank-jax sweep (see --help); other "
                "flags must be --config.FIELD=VALUE overrides for every point"
            )
        unknown = unknown_override([flag], config)
        if unknown:
            raise ConfigError(unknown)
        *parents, leaf = match.group(1).split(".")
        node = config
        for parent in parents:
            node = node[parent]
        try:
            node[leaf] = _typed(match.group(2), node[leaf])
        except (ValueError, TypeError) as error:
            raise ConfigError(f"--config.{match.group(1)}: {error}") from None
    return config


def expected_config(config_spec: str, point: Point, extra: list[str]) -> dict | None:
    """The ``config.json`` a point's run would write, computed here; None if it cannot be.

    The sweep uses it to recognise a finished run without starting a process for it;
    where it returns None (a flag it cannot read the way the CLI does), the
    trainer itself decides, as before.
    """
    try:
        config = apply_point(overridden(config_spec, extra), point)
        return json.loads(config.to_json_best_effort(sort_keys=True))
    except Exception:  # any failure: the trainer's own check decides (and reports errors)
        return None


def finished(run_dir: Path, expected: dict | None) -> bool:
    """A run of exactly this config that wrote its summary (and no failure record)."""
    paths = [run_dir / name for name in ("config.json", "summary.json")]
    if expected is None or not all(p.exists() for p in paths) or (run_dir / "failed.json").exists():
        return False
    try:  # a damaged file is no finished run: the trainer rewrites it, or names it
        return same_config(read_json(paths[0]), expected) and isinstance(read_json(paths[1]), dict)
    except ConfigError:
        return False


def _flag(key: str, value: Any) -> str:
    if isinstance(value, str):
        return f"--config.{key}={value}"
    return (
        f"--config.{key}={json.dumps(value)}"
        if isinstance(value, bool)
        else f"--config.{key}={value}"
    )


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


def run_point(
    config_spec: str,
    workdir: Path,
    point: Point,
    extra: list[str],
    *,
    launch: list[str] = (),
    stream: bool = False,
) -> dict:
    """Train one point in its own process; returns its status record.

    ``launch``: a prefix for the trainer's command (``srun ...`` for a point of
    several processes); ``stream``: its stdout goes to ours (a SLURM task's log)."""
    run_dir = workdir / point_name(point)
    if finished(run_dir, expected_config(config_spec, point, extra)):
        return {"name": run_dir.name, "status": "done", "seconds": 0.0}
    summary = run_dir / "summary.json"
    # The trainer itself decides: a finished run of this very config returns at once,
    # a run of another config is refused (or replaced with --force), others resume.
    before = summary.stat().st_mtime_ns if summary.exists() else None
    command = [*launch, sys.executable, "-m", "lowrank_jax.cli", "train", "--config", config_spec]
    command += ["--workdir", str(run_dir), *extra, *(_flag(k, v) for k, v in point.items())]
    began = time.perf_counter()
    result = subprocess.run(
        command, stdout=None if stream else subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seconds = time.perf_counter() - began
    if stream:
        print(result.stderr, file=sys.stderr, end="", flush=True)
    failed = run_dir / "failed.json"
    if result.returncode:
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        error = next(
            (e for e in reversed(errors) if e.startswith("error:")), errors[-1] if errors else ""
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "name": run_dir.name,
            "status": "failed",
            "exit_code": result.returncode,
            "error": error,
        }
        failed.write_text(json.dumps({**record, "point": point}, indent=1) + "\n")
        return {**record, "seconds": seconds}
    failed.unlink(missing_ok=True)
    done_before = before is not None and summary.stat().st_mtime_ns == before
    return {
        "name": run_dir.name,
        "status": "done" if done_before else "trained",
        "seconds": seconds,
    }


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
        from lowrank_jax import slurm as cluster

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


def print_results(results: list[dict], total: int) -> None:
    for i, record in enumerate(results, 1):
        _line(i, total, record)


def _line(i: int, total: int, record: dict) -> None:
    detail = f" ({record['error']})" if record["status"] == "failed" else ""
    print(
        f"[{i}/{total}] {record['status']:7s} {record['name']} {record['seconds']:.0f}s{detail}",
        flush=True,
    )


def _run_points(config_spec, workdir: Path, points, jobs: int, extra: list[str]) -> list:
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
        futures = [pool.submit(run_point, config_spec, workdir, p, list(extra)) for p in points]
        for future in concurrent.futures.as_completed(futures):
            results.append(future.result())
            _line(len(results), len(points), results[-1])
    return results
