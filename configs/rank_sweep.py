"""Rank sweep: accuracy and step time against the rank R, per attention kind.

    lowrank-jax sweep --config configs/rank_sweep.py --workdir runs/rank_sweep [--jobs 2]
    lowrank-jax sweep --config configs/rank_sweep.py:dataset=listops --workdir runs/rs-listops
    lowrank-jax report runs/rank_sweep

``dataset=synthetic`` (the default, ``make demo``): the base is
``configs/tiny.py:runlocal``, the synthetic counting task at CPU scale; points are
attention softmax | performer times a dense FFN (the reference) and factorized
FFNs of rank 2, 4, 8, 16 (the FFN is 32 -> 64 -> 32, so 16 is half the
break-even rank 21). A few minutes on 2 CPU cores.

``dataset=listops`` / ``dataset=fashion_mnist``: the base is that config's
``runlocal`` (CPU scale); ``dataset=trec``: ``configs/text.py:task=trec,overfit``,
the regime where a dense model overfits (``experiments/seed_claims``). Their
``train.train_eval_batches`` makes the report show the selected model's train
accuracy beside its test accuracy (the train/test gap); points are the dense
model, factorized FFNs and factorized Q/K/V projections at the dataset's ranks
(``experiments/rank_sweep``).

Args: ``dataset``; ``ranks`` and ``qkv_ranks`` (e.g. ``ranks=2+4+8``; ``none`` for
no points; default per dataset); ``attention`` (e.g. ``softmax+linformer``);
``khodak`` (with ``decay``, default 1e-3): each factorized point also with the
spectral initialisation, and with spectral initialisation and Frobenius decay λ =
``decay`` (Khodak et al. 2021; ``dense.init``, ``dense.frobenius_decay``):

    lowrank-jax sweep --config configs/rank_sweep.py:dataset=trec,ranks=none,khodak \
        --seeds 3 --workdir runs/seed_claims_trec
"""

from pathlib import Path

from lowrank_jax.config import ConfigError, load_module, parse_arg
from lowrank_jax.sweeps.launch import product

# dataset: (base config file, base arg, FFN ranks, Q/K/V ranks, attention kinds)
DATASETS = {
    "synthetic": ("tiny.py", "runlocal", "2+4+8+16", "none", "softmax+performer"),
    # 64-wide model: FFN 64 -> 128 (break-even rank 42), Q/K/V 64 -> 64 (32)
    "listops": ("listops.py", "runlocal", "4+16", "4+16", "softmax"),
    # 32-wide model: FFN 32 -> 64 (break-even rank 21), Q/K/V 32 -> 32 (16)
    "fashion_mnist": ("fashion_mnist.py", "runlocal", "2+8", "2+8", "softmax"),
    # the regime where the dense model overfits (experiments/seed_claims): from scratch on
    # TREC's 4,457 training questions; 64-wide: FFN 64 -> 256 (break-even 51), Q/K/V (32)
    "trec": ("text.py", "task=trec,overfit", "2+8+32", "2+8+16", "softmax"),
}


def _load(name):
    module = load_module(Path(__file__).with_name(name))
    return module


def _args(arg):
    args = parse_arg(
        arg, dataset="synthetic", ranks="", qkv_ranks="", attention="", khodak=False, decay=1e-3
    )
    if args.dataset not in DATASETS:
        raise ConfigError(
            f"config arg 'dataset': unknown {args.dataset!r}; valid: {', '.join(DATASETS)}"
        )
    _, _, ranks, qkv_ranks, attention = DATASETS[args.dataset]
    args.ranks = args.ranks or ranks
    args.qkv_ranks = args.qkv_ranks or qkv_ranks
    args.attention = args.attention or attention
    return args


def _ranks(text: str, field: str) -> list[int]:
    if text == "none":
        return []
    try:
        return [int(r) for r in text.split("+")]
    except ValueError:
        raise ConfigError(
            f"config arg {field!r}: must be ranks joined by '+' (e.g. 2+8) or none, got {text!r}"
        ) from None


def get_config(arg=None):
    args = _args(arg)
    file, base_arg, *_ = DATASETS[args.dataset]
    return _load(file).get_config(base_arg)


def get_sweep(arg=None):
    args = _args(arg)
    kinds = args.attention.split("+")
    ffn, qkv = _ranks(args.ranks, "ranks"), _ranks(args.qkv_ranks, "qkv_ranks")
    dense = product(**{"model.attention.kind": kinds, "model.ffn.dense.kind": ["dense"]})
    low_rank = product(
        **{
            "model.attention.kind": kinds,
            "model.ffn.dense.kind": ["factorized"],
            "model.ffn.dense.rank": ffn,
        }
    )
    low_rank_qkv = product(
        **{
            "model.attention.kind": kinds,
            "model.attention.dense.kind": ["factorized"],
            "model.attention.dense.rank": qkv,
        }
    )
    points = dense + (low_rank if ffn else []) + (low_rank_qkv if qkv else [])
    if not args.khodak:
        return points
    tricks = [{"init": "spectral"}, {"init": "spectral", "frobenius_decay": args.decay}]
    return points + [
        {**point, **{f"model.{group}.dense.{k}": v for k, v in trick.items()}}
        for trick in tricks
        for point in points
        for group in ("attention", "ffn")
        if point.get(f"model.{group}.dense.kind") == "factorized"
    ]
