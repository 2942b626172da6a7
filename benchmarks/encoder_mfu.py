"""Model FLOP utilisation of the dense-baseline encoder's training step.

Target 2: the training step of a dense softmax encoder
(D = 512, N = 512, B = 16, 4 layers, FFN 2048, 8 heads) reaches at least 50% of
the matmul peak measured in the same run (a large square ``jnp.dot``).

FLOPs per step are counted two ways and both are printed: XLA's own count of
the compiled step (``cost_analysis``: every matmul, attention included, plus
elementwise work) and the model count 6 · (dense MACs per token) · tokens +
the attention products (QKᵀ and PV: 4 · N² · D per sequence and layer, x3 for
forward + backward). MFU uses the model count, as the PaLM paper defines it.
On a GPU the model computes in bfloat16, the dtype of the measured peak.

    python benchmarks/encoder_mfu.py
    python benchmarks/encoder_mfu.py --quick
"""

from __future__ import annotations

import common
import jax
from common import target
from flax import nnx

from lowrank_jax import bench
from lowrank_jax.config import train_defaults
from lowrank_jax.layers import macs_per_token
from lowrank_jax.models import build_encoder, default_config
from lowrank_jax.train.metrics import matmul_peak_flops


def config(quick: bool):
    model = default_config()
    dim, layers, length = (64, 1, 64) if quick else (512, 4, 512)
    model.update(
        vocab_size=256,
        num_classes=2,
        max_len=length,
        dim=dim,
        heads=8,
        num_layers=layers,
        cls_token=False,
        pooling="mean",
        dropout=0.0,
    )
    model.ffn.dim = 4 * dim
    if jax.default_backend() != "cpu":  # the peak is measured in bfloat16 there
        model.dtype = "bfloat16"
    return model, length


def targets(quick: bool) -> list[dict]:
    model, length = config(quick)
    batch, repeats = (2, 2) if quick else (16, 5)
    step = bench.EncoderStep(model, train_defaults().train, batch, length)
    seconds = step.seconds(repeats)
    peak = matmul_peak_flops()
    dense_macs = macs_per_token(build_encoder(model, rngs=nnx.Rngs(0)))
    attention = 3 * 4 * length * length * model.dim * model.num_layers * batch
    flops = 6 * dense_macs * batch * length + attention
    xla_flops = step.flops
    mfu = flops / seconds / peak
    print(
        f"step {seconds * 1e3:.1f} ms, model FLOPs {flops / 1e9:.1f} G (XLA counts "
        f"{xla_flops / 1e9:.1f} G), peak {peak / 1e9:.1f} GFLOP/s, MFU {mfu:.1%}",
        flush=True,
    )
    shape = f"D={model.dim}, N={length}, B={batch}, {model.num_layers} layers"
    return [
        target(
            f"2. dense encoder training step MFU ({shape})",
            f"{mfu:.0%} ({flops / seconds / 1e9:.1f} of {peak / 1e9:.1f} GFLOP/s; "
            f"step {seconds * 1e3:.0f} ms)",
            "≥ 50% of the measured matmul peak",
            [("MFU", mfu, ">=", 0.5)],
            mfu=mfu,
            xla_flops=xla_flops,
            model_flops=flops,
        )
    ]


def main(argv: list[str] | None = None) -> list[dict]:
    return common.main(targets, "encoder MFU", __doc__, argv)


if __name__ == "__main__":
    main()
