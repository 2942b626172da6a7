"""Rank sweep: accuracy and step time against the FFN rank R, per attention kind.

    lowrank-jax sweep --config configs/rank_sweep.py --workdir runs/rank_sweep [--jobs 2]
    lowrank-jax report runs/rank_sweep

The base is ``configs/tiny.py:runlocal`` (the synthetic counting task, CPU
scale): ``make demo`` runs this sweep in a few minutes on 2 CPU cores. Points:
attention softmax | performer, times a dense FFN (the reference) and
factorized FFNs of rank 2, 4, 8, 16 (the FFN is 32 -> 64 -> 32, so 16 is half
the break-even rank 21). Reproduces no paper table.

Args: ``ranks`` (e.g. ``ranks=2+4+8``), ``attention`` (e.g. ``softmax+linformer``).
"""

import importlib.util
from pathlib import Path

from lowrank_jax.config import parse_arg
from lowrank_jax.sweep import product


def _tiny():
    spec = importlib.util.spec_from_file_location("tiny", Path(__file__).with_name("tiny.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(arg):
    return parse_arg(arg, ranks="2+4+8+16", attention="softmax+performer")


def get_config(arg=None):
    _args(arg)  # reject unknown args here too
    return _tiny().get_config("runlocal")


def get_sweep(arg=None):
    args = _args(arg)
    kinds = args.attention.split("+")
    dense = product(**{"model.attention.kind": kinds, "model.ffn.dense.kind": ["dense"]})
    low_rank = product(
        **{
            "model.attention.kind": kinds,
            "model.ffn.dense.kind": ["factorized"],
            "model.ffn.dense.rank": [int(r) for r in args.ranks.split("+")],
        }
    )
    return dense + low_rank
