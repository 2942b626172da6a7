"""Config helpers: big_vision-style ``get_config(arg)`` arguments and the train defaults.

A config file is ``configs/<name>.py`` with ``get_config(arg)``; ``arg`` is the
text after the colon in ``--config configs/tiny.py:attention=performer,rank=8``.
"""

from __future__ import annotations

import ml_collections


class ConfigError(ValueError):
    """A bad config or command-line value; the CLI prints it as one line, exit code 2."""


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
                "log_every": 10,  # metrics.jsonl / TensorBoard / progress bar
                "eval_every": 100,  # evaluation on the eval split (0 = only at the end)
                "eval_batches": 4,  # eval batches of train.batch_size
                # at the end, accuracy on the first N training batches (eval mode), for
                # the train/eval gap; 0 = off
                "train_eval_batches": 0,
                "checkpoint_every": 100,  # orbax checkpoint (and always at the end)
                "keep_checkpoints": 2,  # the newest N are kept
                "peak_flops": 0.0,  # FLOP/s for MFU; 0 = measure a large matmul at start
            },
            "mesh": {"data": -1, "fsdp": 1, "tensor": 1},  # -1 fills with the remaining devices
        }
    )
