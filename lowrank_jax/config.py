"""Configs: bad-input errors and checks, config files, big_vision-style args, train defaults.

Every check here raises ``ConfigError`` in one style, ``FIELD: must be ..., got ...``;
a caller that knows where a group of fields sits prefixes their names with
``within(path)``. The CLI prints a ``ConfigError`` as one line and exits with 2;
any other exception is a bug and keeps its traceback.

A config file is ``configs/<name>.py`` with ``get_config(arg)``; ``arg`` is the
text after the colon in ``--config configs/tiny.py:attention=performer,rank=8``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import ml_collections


class ConfigError(ValueError):
    """A bad config or command-line value; the CLI prints it as one line, exit code 2."""


def fail(field: str, must: str, value: Any) -> NoReturn:
    """Raise ``ConfigError("FIELD: must be MUST, got VALUE")``."""
    raise ConfigError(f"{field}: must be {must}, got {value!r}")


def check_int(value: Any, field: str, *, low: int = 1, high: int | None = None, why: str = ""):
    """``value`` if it is an int in ``[low, high]`` (``high`` None: no bound), else fail.

    Example:
      >>> check_int(0, "rank", high=4, why="min(in, out)")
      Traceback (most recent call last):
      ...
      lowrank_jax.config.ConfigError: rank: must be an integer in [1, 4] (min(in, out)), got 0
    """
    if isinstance(value, bool) or not isinstance(value, int):
        ok = False
    else:
        ok = value >= low and (high is None or value <= high)
    if not ok:
        span = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        fail(field, span + (f" ({why})" if why else ""), value)
    return value


def check_choice(value: Any, field: str, valid: Sequence[str]):
    """``value`` if it is one of ``valid``, else fail naming them."""
    if not isinstance(value, str) or value not in valid:
        fail(field, f"one of {', '.join(valid)}", value)
    return value


def check_rate(value: Any, field: str):
    """``value`` if it is a number in [0, 1), else fail."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        fail(field, "a rate in [0, 1)", value)
    return value


def check_number(value: Any, field: str, *, low: float = 0.0):
    """``value`` if it is a finite number >= ``low``, else fail."""
    number = not isinstance(value, bool) and isinstance(value, int | float)
    if not number or not math.isfinite(value) or not value >= low:
        fail(field, f"a finite number >= {low:g}", value)
    return value


def check_known(given, valid, field: str) -> None:
    """Fail on the first key of ``given`` that ``valid`` lacks (``field``: the group's path)."""
    for key in given:
        if key not in valid:
            raise ConfigError(f"{field}.{key}: unknown field; valid: {', '.join(sorted(valid))}")


def require(group, fields: Sequence[str], path: str) -> None:
    """Fail on the first of ``fields`` that ``group`` (a ConfigDict or dict) lacks."""
    for name in fields:
        if name not in group:
            raise ConfigError(f"{path}.{name}: missing from the config")


@contextlib.contextmanager
def within(path: str) -> Iterator[None]:
    """Prefix the field of any ``ConfigError`` raised inside with ``path.``."""
    try:
        yield
    except ConfigError as error:
        raise ConfigError(f"{path}.{error}") from None


def load_module(path: str | Path) -> ModuleType:
    """The Python file at ``path`` as a fresh module (config files, experiment scripts).

    A missing file is a ``ConfigError`` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: {path}: no such file")
    name = "_lowrank_" + re.sub(r"\W", "_", str(path.with_suffix("")))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(spec: str, function: str = "get_config"):
    """``get_config(arg)`` (or ``function``) of the file in ``"path[:arg]"``."""
    path, _, arg = spec.partition(":")
    module = load_module(path)
    if not hasattr(module, function):
        raise ConfigError(f"--config: {path} has no {function}(arg)")
    return getattr(module, function)(arg) if arg else getattr(module, function)()


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parse ``"runlocal,attention=performer,rank=8"`` against typed defaults.

    A bare key means True. Values take the type of their default; an unknown key
    or a value of the wrong type raises ``ConfigError`` naming it.

    Example:
      >>> parse_arg("runlocal,rank=8", runlocal=False, rank=0, attention="softmax").rank
      8
    """
    result = ml_collections.ConfigDict(defaults)
    for item in filter(None, (part.strip() for part in (arg or "").split(","))):
        key, eq, text = item.partition("=")
        if key not in defaults:
            raise ConfigError(f"config arg {key!r}: unknown; valid: {', '.join(sorted(defaults))}")
        kind = type(defaults[key])
        if not eq:
            if kind is not bool:
                raise ConfigError(f"config arg {key!r}: needs a value, e.g. {key}={defaults[key]}")
            result[key] = True
        elif kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ConfigError(f"config arg {key!r}: must be true or false, got {text!r}")
            result[key] = text.lower() in ("true", "1")
        else:
            try:
                result[key] = kind(text)
            except ValueError:
                raise ConfigError(
                    f"config arg {key!r}: must be {kind.__name__}, got {text!r}"
                ) from None
    return result


MODEL_ARGS = {"attention": "softmax", "rank": 0, "lora": 0}
"""The model args every config file takes: attention kind, FFN rank (0 = dense), LoRA rank."""


def apply_model_args(model: ml_collections.ConfigDict, args: ml_collections.ConfigDict) -> None:
    """Set ``attention`` kind, a factorized FFN of rank ``rank`` and LoRA ``lora`` on ``model``."""
    model.attention.kind = args.attention
    if args.rank:
        model.ffn.dense.kind, model.ffn.dense.rank = "factorized", args.rank
    model.lora.rank = args.lora


def train_defaults() -> ml_collections.ConfigDict:
    """The ``config.train``, ``config.mesh`` and top-level fields every config starts from."""
    return ml_collections.ConfigDict(
        {
            "seed": 0,  # parameters, data order and dropout all derive from it
            "train": {
                "steps": 1000,  # optimizer steps
                "batch_size": 32,  # global batch, split over the data-parallel devices
                "learning_rate": 1e-3,  # peak learning rate
                "warmup_steps": 100,  # linear warm-up from 0
                "schedule": "cosine",  # cosine (to 0 at `steps`) | rsqrt | constant
                "weight_decay": 0.01,  # AdamW, on matrices only
                "grad_clip": 1.0,  # global-norm clipping; 0 = off
                "b1": 0.9,
                "b2": 0.999,
                "trainable": "auto",  # all | lora | adapters | auto | a regex over param paths
                "loss": "classification",  # classification | distillation (train/losses.py)
                "distillation": {  # train.loss = distillation: match a frozen teacher
                    "metric": "cosine",  # cosine (1 - cosine) | mse, on the pooled output
                    "teacher": "self",  # self (the model before surgery) | a run directory
                },
                "log_every": 10,  # metrics.jsonl / TensorBoard / progress bar
                "eval_every": 100,  # evaluation on the validation split (0 = only at the end)
                "eval_batches": 4,  # validation batches per evaluation; 0 = the whole split
                # at the end, the selected model's accuracy (eval mode) on the first N
                # batches of the training order (a fixed sample), the train side of the
                # train/test gap; 0 = off
                "train_eval_batches": 4,
                "checkpoint_every": 100,  # orbax checkpoint (and always at the end)
                "keep_checkpoints": 2,  # the newest N are kept
                "peak_flops": 0.0,  # FLOP/s for MFU; 0 = measure a large matmul at start
                # "FIRST-LAST" (e.g. "10-15"): a jax.profiler trace of those steps in
                # WORKDIR/profile (TensorBoard's profile tab, or Perfetto); "" = off
                "profile_steps": "",
            },
            "mesh": {"data": -1, "fsdp": 1, "tensor": 1},  # -1 fills with the remaining devices
        }
    )


def unknown_override(argv: list[str], config) -> str | None:
    """Name the first ``--config.a.b`` override whose path the config lacks."""
    for arg in argv:
        match = re.match(r"^--config\.([\w.]+)", arg)
        if not match:
            continue
        node, walked = config, []
        for key in match.group(1).split("."):
            if not hasattr(node, "keys") or key not in node:
                valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(none)"
                where = ".".join(["config", *walked])
                return f"--{where}.{key}: unknown field; valid fields of {where}: {valid}"
            node, walked = node[key], [*walked, key]
    return None
