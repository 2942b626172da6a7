"""The run directory: which config it holds, and a disk that fills up under it.

One writer per run is ``lock.RunLock``; this module decides whether a workdir may
be written (``check``: a run of another config is refused unless forced, then
cleared) and turns a full disk, whichever writer met it (orbax, metrics.jsonl,
TensorBoard, summary.json), into one ``DiskFullError`` line.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import jax

from lowrank_jax.config import ConfigError
from lowrank_jax.train.metrics import read_json

RUN_FILES = (
    "checkpoints",
    "best",
    "metrics.jsonl",
    "tensorboard",
    "summary.json",
    "config.json",
)


class DiskFullError(OSError):
    """The disk under the workdir filled up; the run stopped, its last checkpoint untouched."""


def same_config(old: dict, new: dict) -> bool:
    """Whether a run's recorded ``config.json`` (``old``) is the config ``new``.

    Equal, or equal once the fields a later version of the framework added are
    filled in with their defaults: an upgrade that adds an option (e.g. the
    factorized kind's ``init``) neither orphans a run nor retrains a sweep point.
    """
    return old == new or _with_new_defaults(old, new, _defaults()) == new


def _defaults() -> dict:
    from lowrank_jax.config import train_defaults
    from lowrank_jax.models import default_config

    data = {"buckets": []}  # the data fields every config now has (as JSON reads them)
    return {**train_defaults().to_dict(), "model": default_config().to_dict(), "data": data}


def _with_new_defaults(old, new, defaults):
    """``old`` with each field it lacks that ``new`` has at its default value."""
    if not all(isinstance(x, dict) for x in (old, new, defaults)):
        return old
    filled = dict(old)
    for key, value in new.items():
        if key not in old:
            if key in defaults and defaults[key] == value:
                filled[key] = value
        else:
            filled[key] = _with_new_defaults(old[key], value, defaults.get(key))
    return filled


def _first_difference(old, new, prefix: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {old!r} -> {new!r}"


def check(workdir: Path, config_dict: dict, force: bool, dry: bool = False) -> None:
    """Refuse a workdir that holds a run of another config, unless ``force`` (then clear it).

    ``dry``: only look (a run of another config that ``force`` will replace passes).
    """
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"workdir: {workdir} is a file, not a directory")
    path = workdir / "config.json"
    if not path.exists():
        return
    old = read_json(path)
    if same_config(old, config_dict) or dry:
        return
    if not force:
        raise ConfigError(
            f"workdir {workdir} holds a run of a different config "
            f"({_first_difference(old, config_dict)}); "
            "use --force to replace it, or another --workdir"
        )
    if jax.process_index() == 0:
        for name in RUN_FILES:
            target = workdir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()


def no_space(error: BaseException | None) -> bool:
    """Whether a full disk is behind ``error`` (an OSError, or TensorStore's words for one)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_message(workdir: Path, state_bytes: int | None) -> str:
    """One line: where, how many bytes a checkpoint needs and are free, what survived."""
    free = shutil.disk_usage(workdir if workdir.exists() else workdir.parent).free
    needs = f"a checkpoint needs about {state_bytes:,} bytes, " if state_bytes else ""
    steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
    kept = f"step {max(steps)}, untouched" if steps else "none yet"
    return (
        f"no space left on device under {workdir}: {needs}{free:,} are free; free some and "
        f"rerun the same command to resume (last checkpoint: {kept})"
    )
