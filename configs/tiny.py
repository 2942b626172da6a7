"""Tiny synthetic task: which class token occurs most often (for tests and smoke runs).

    lowrank-jax train --config configs/tiny.py:runlocal --workdir runs/tiny
    lowrank-jax train --config configs/tiny.py:attention=performer,rank=8 --workdir runs/tiny-perf

Args (after the colon): ``runlocal`` (a run of well under a minute on 2 CPU
cores), ``attention`` (softmax | linformer | performer), ``rank`` (0: dense
FFN; R: factorized FFN of rank R), ``lora`` (0: off; R: LoRA rank R on Q/V).
Reproduces no paper table; it checks that the whole training system works.
"""

from lowrank_jax.config import MODEL_ARGS, apply_model_args, parse_arg, train_defaults
from lowrank_jax.models import default_config as model_defaults


def get_config(arg=None):
    args = parse_arg(arg, runlocal=False, **MODEL_ARGS)
    config = train_defaults()

    config.data = {
        "name": "synthetic",  # lowrank_jax/data/synthetic.py
        "vocab_size": 32,  # ids: 0 pad, 1..num_classes class tokens, the rest filler
        "num_classes": 4,  # C
        "max_len": 64,  # N, padded length
        "min_len": 16,  # shortest sequence before padding
        "buckets": (),  # batch lengths, e.g. (16, 32, 64); () = every batch at max_len
    }

    model = model_defaults()
    model.update(vocab_size=32, num_classes=4, max_len=64, dim=64, heads=4, num_layers=2)
    model.dropout = 0.1
    model.pooling = "mean"
    model.ffn.dim = 128
    model.attention.linformer.proj_len = 16
    model.attention.performer.num_features = 32
    apply_model_args(model, args)
    config.model = model

    config.train.steps = 2000
    config.train.batch_size = 32
    config.train.learning_rate = 3e-3
    if args.runlocal:  # well under a minute on 2 CPU cores
        config.train.steps = 150
        config.train.warmup_steps = 15
        config.train.log_every = 10
        config.train.eval_every = 50
        config.train.eval_batches = 16  # 512 examples
        config.train.checkpoint_every = 50
        config.model.dim, config.model.ffn.dim = 32, 64
    return config
