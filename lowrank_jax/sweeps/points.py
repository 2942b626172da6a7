"""One point of a sweep: its name, its overrides, whether it already finished, and its
training in a process of its own (``run_point``), shared by the local and SLURM launchers.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lowrank_jax.config import ConfigError, load_config, unknown_override
from lowrank_jax.train.metrics import read_json
from lowrank_jax.train.rundir import same_config

Point = dict[str, Any]


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
        node, leaf = _parent(config, key)
        node[leaf] = value
    return config


def _parent(config, key: str):
    """(the node holding dotted ``key``'s last part, that part): ``config.a.b``, ``"c"``."""
    *parents, leaf = key.split(".")
    for parent in parents:
        config = config[parent]
    return config, leaf


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
        node, leaf = _parent(config, match.group(1))
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


def print_results(results: list[dict], total: int, first: int = 1) -> None:
    """A line per point: ``[i/total] status name seconds (error)``."""
    for i, record in enumerate(results, first):
        detail = f" ({record['error']})" if record["status"] == "failed" else ""
        print(
            f"[{i}/{total}] {record['status']:7s} {record['name']} "
            f"{record['seconds']:.0f}s{detail}",
            flush=True,
        )
