"""LRA ListOps (Long Range Arena, Tay et al. 2020, Table 1, "ListOps" column).

    lowrank-jax train --config configs/listops.py:attention=linformer --workdir runs/lo-linformer
    lowrank-jax train --config configs/listops.py:runlocal --workdir runs/lo-local  # CPU scale
    lowrank-jax sweep --config configs/listops.py:runlocal --workdir runs/listops_runlocal

The full config uses LRA's ListOps hyper-parameters: 4 layers, embedding 512,
8 heads, MLP 1024, batch 32, learning rate 0.05 with an rsqrt schedule after
1000 warm-up steps, 5k steps, inputs up to 2000 tokens (LRA reports
Transformer 36.37, Linformer 35.70, Performer 18.01 test accuracy). It needs an
accelerator. ``runlocal`` is a CPU-scale run on ``listops_small`` (inputs of
32-512 tokens) with a small model; its accuracy is not comparable to LRA's.

``get_sweep`` gives the points of ``experiments/listops``: softmax, Linformer
and Performer attention, each with a dense FFN and with a factorized FFN of rank
dim / 4 (128 in the full config, 16 in ``runlocal``).

``lra_settings``: the attention settings of LRA's released code beside ours, on
the same data and schedule (experiments/listops, "LRA's own settings"):

    lowrank-jax sweep --config configs/listops.py:runlocal,lra_settings --seeds 3 \
        --workdir runs/listops_lra

LRA's ``performer_base`` (FAVOR+, softmax kernel, ``nb_features=2``,
``ortho_scaling=0``: chi-distributed row norms, features redrawn at every call)
and ``LinformerAttention`` (``low_rank_features=16``, one projection for keys and
values); ours: Performer M = 64 orthogonal features drawn once, Linformer P = 64
with a projection per head (the ``runlocal`` defaults), and exact softmax
attention. ``runlocal,lra_settings`` trains 600 steps of batch 32 (two epochs of
listops_small), validation every 100.

Args: ``runlocal``, ``attention`` (softmax | linformer | performer), ``rank``
(0: dense FFN; R: factorized FFN of rank R), ``lora`` (LoRA rank on Q/V, 0 = off),
``lra_settings`` (the sweep above, and its longer schedule).
"""

from lowrank_jax.config import MODEL_ARGS, apply_model_args, parse_arg, train_defaults
from lowrank_jax.data import listops
from lowrank_jax.models import default_config as model_defaults
from lowrank_jax.sweeps.launch import product


def get_config(arg=None):
    args = parse_arg(arg, runlocal=False, lra_settings=False, **MODEL_ARGS)
    config = train_defaults()
    config.data = {
        "name": "listops_small" if args.runlocal else "listops",  # TFDS builders
        "data_dir": "",  # "" = $LOWRANK_JAX_DATA or ~/.cache/lowrank_jax/tensorflow_datasets
        "max_len": 512 if args.runlocal else 2000,  # N: longer inputs are truncated
        "buckets": (),  # batch lengths, e.g. (16, 32, 64); () = every batch at max_len
    }

    model = model_defaults()
    model.update(
        vocab_size=len(listops.VOCAB),
        num_classes=listops.NUM_CLASSES,
        max_len=config.data.max_len,
        dim=512,
        heads=8,
        num_layers=4,
        dropout=0.1,
        pooling="cls",
        positions="learned",
    )
    model.ffn.dim = 1024
    model.attention.linformer.proj_len = 256  # LRA's Linformer k
    model.attention.performer.num_features = 256
    apply_model_args(model, args)
    config.model = model

    config.train.update(
        steps=5000,
        batch_size=32,
        learning_rate=0.05,
        schedule="rsqrt",
        warmup_steps=1000,
        weight_decay=0.1,
        eval_every=500,
        eval_batches=0,  # the whole 2k validation split (the 2k test trees score the best)
        train_eval_batches=63,  # the selected model on 2k training examples: train/test gap
        checkpoint_every=1000,
    )
    if args.runlocal:  # CPU scale: a few hundred steps, about 5 minutes on 2 cores
        model.update(dim=64, heads=4, num_layers=2)
        model.ffn.dim = 128
        model.attention.linformer.proj_len = 64
        model.attention.performer.num_features = 64
        config.train.update(
            steps=400,
            batch_size=16,
            learning_rate=1e-3,
            schedule="cosine",
            warmup_steps=40,
            weight_decay=0.01,
            log_every=20,
            eval_every=200,
            eval_batches=0,  # the whole 500-tree validation split
            train_eval_batches=31,
            checkpoint_every=200,
        )
        if args.lra_settings:  # two epochs of listops_small, the best of 6 validations
            config.train.update(
                steps=600, batch_size=32, warmup_steps=60, eval_every=100, checkpoint_every=100
            )
    return config


# LRA's released attention settings (lra_benchmarks/listops/configs/performer_base.py,
# lra_benchmarks/models/linformer: LinformerAttention's low_rank_features default)
LRA_PERFORMER = {
    "model.attention.kind": "performer",
    "model.attention.performer.num_features": 2,  # nb_features=2
    "model.attention.performer.kernel": "softmax",
    "model.attention.performer.orthogonal": True,
    "model.attention.performer.scaling": "chi",  # ortho_scaling=0.0
    "model.attention.performer.redraw": "call",  # redraw_features=True, evaluation included
}
LRA_LINFORMER = {
    "model.attention.kind": "linformer",
    "model.attention.linformer.proj_len": 16,  # low_rank_features=16
    "model.attention.linformer.sharing": "kv",  # one projection for keys and values
}


def get_sweep(arg=None):
    if parse_arg(arg, runlocal=False, lra_settings=False, **MODEL_ARGS).lra_settings:
        return [
            {"model.attention.kind": "softmax"},
            LRA_LINFORMER,
            {"model.attention.kind": "linformer"},  # ours: P = 64 (256 full), a projection per head
            LRA_PERFORMER,
            {"model.attention.kind": "performer"},  # ours: M = 64 (256 full), drawn once
        ]
    rank = get_config(arg).model.dim // 4
    kinds = ["softmax", "linformer", "performer"]
    return product(**{"model.attention.kind": kinds, "model.ffn.dense.kind": ["dense"]}) + product(
        **{
            "model.attention.kind": kinds,
            "model.ffn.dense.kind": ["factorized"],
            "model.ffn.dense.rank": [rank],
        }
    )
