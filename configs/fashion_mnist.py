"""Sequential Fashion-MNIST: our stand-in for LRA "Image" (CIFAR-10 is not installable here).

    lowrank-jax train --config configs/fashion_mnist.py:attention=performer --workdir runs/fm-perf
    lowrank-jax train --config configs/fashion_mnist.py:runlocal --workdir runs/fm-local  # CPU

Pixels are a 784-step sequence (vocabulary 256), as LRA's Image task feeds
CIFAR-10 (Tay et al. 2020); the full config is a small encoder (3 layers, emb
64, 4 heads, MLP 128, batch 64, 5k steps). LRA's CIFAR-10 numbers are not
comparable (another dataset). ``runlocal`` trains a few hundred steps on 2 CPU
cores.

Args: ``runlocal``, ``attention``, ``rank`` (factorized FFN), ``lora``.
"""

from lowrank_jax.config import MODEL_ARGS, apply_model_args, parse_arg, train_defaults
from lowrank_jax.data import fashion_mnist
from lowrank_jax.models import default_config as model_defaults


def get_config(arg=None):
    args = parse_arg(arg, runlocal=False, **MODEL_ARGS)
    config = train_defaults()
    config.data = {
        "name": "fashion_mnist",
        "data_dir": "",  # "" = $LOWRANK_JAX_DATA or ~/.cache/lowrank_jax/tensorflow_datasets
        "source_dir": "",  # "" = /usr/share/datasets/fashion-mnist (Debian's package)
        "max_len": fashion_mnist.LENGTH,  # N = 784 pixels
    }
    model = model_defaults()
    model.update(
        vocab_size=fashion_mnist.VOCAB_SIZE,
        num_classes=fashion_mnist.NUM_CLASSES,
        max_len=fashion_mnist.LENGTH,
        dim=64,
        heads=4,
        num_layers=3,
        dropout=0.1,
        pooling="mean",
    )
    model.ffn.dim = 128
    model.attention.linformer.proj_len = 128
    model.attention.performer.num_features = 128
    apply_model_args(model, args)
    config.model = model
    config.train.update(
        steps=5000,
        batch_size=64,
        learning_rate=1e-3,
        warmup_steps=500,
        eval_every=1000,
        eval_batches=0,  # the whole 6k validation split (the 10k test images score the best)
        train_eval_batches=156,  # the selected model on 10k training images: train/test gap
        checkpoint_every=1000,
    )
    if args.runlocal:  # CPU scale: a few hundred steps, a few minutes on 2 cores
        model.update(dim=32, heads=2, num_layers=1)
        model.ffn.dim = 64
        config.train.update(
            steps=300,
            batch_size=16,
            warmup_steps=30,
            log_every=20,
            eval_every=150,
            eval_batches=32,  # the first 512 validation images
            train_eval_batches=32,
            checkpoint_every=150,
        )
    return config
