"""LoRA paper (Hu et al. 2021, arXiv 2106.09685), trainable-parameter counts, reproduced by surgery.

Each model is built *abstractly* with ``nnx.eval_shape`` (shapes only, no
memory: GPT-3 175B costs nothing), LoRA is applied to W_q and W_v with
``surgery.apply_lora`` inside the same ``eval_shape``, and ``count_params``
counts the LoRA parameters. Our encoder stands in for each model's
Transformer stack; LoRA's count depends only on the width, the depth and the
targets, which match the papers' models.

    python experiments/lora_params/run.py            # all rows, writes results/params.md
    python experiments/lora_params/run.py --quick    # the RoBERTa rows only (CI)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from flax import nnx

from lowrank_jax.models import build_encoder, default_config
from lowrank_jax.surgery import apply_lora, count_params

QV = r"layers\.\d+\.attention\.(query|value)"
# (name, layers, width, heads, FFN width, vocabulary, rank, the LoRA paper's count and table)
ROWS = [
    ("RoBERTa-base", 12, 768, 12, 3072, 50265, 8, "0.3M", "Table 2"),
    ("RoBERTa-large", 24, 1024, 16, 4096, 50265, 8, "0.8M", "Table 2"),
    ("GPT-3 175B", 96, 12288, 96, 49152, 50257, 1, "4.7M", "Table 4"),
    ("GPT-3 175B", 96, 12288, 96, 49152, 50257, 8, "37.7M", "Table 4"),
]


def count(layers: int, width: int, heads: int, ffn: int, vocab: int, rank: int) -> dict[str, int]:
    cfg = default_config()
    cfg.update(
        vocab_size=vocab, num_classes=2, max_len=512, dim=width, heads=heads, num_layers=layers
    )
    cfg.ffn.dim = ffn

    def build():
        model = build_encoder(cfg, rngs=nnx.Rngs(0))
        return apply_lora(model, QV, rank, rngs=nnx.Rngs(1))

    return count_params(nnx.eval_shape(build))


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="RoBERTa rows only")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results") / "params.md"))
    args = parser.parse_args(argv)
    rows = ROWS[:2] if args.quick else ROWS
    results = []
    lines = [
        "| model | R | LoRA on | paper (trainable) | ours (LoRA params) | ours exact "
        "| total params (ours) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for name, layers, width, heads, ffn, vocab, rank, paper, table in rows:
        began = time.perf_counter()
        counts = count(layers, width, heads, ffn, vocab, rank)
        seconds = time.perf_counter() - began
        results.append({"model": name, "rank": rank, "paper": paper, **counts, "seconds": seconds})
        lines.append(
            f"| {name} | {rank} | W_q, W_v | {paper} ({table}) | {_millions(counts['lora'])} "
            f"| {counts['lora']:,} | {_millions(counts['total'])} |"
        )
        print(lines[-1], flush=True)
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
    return results


if __name__ == "__main__":
    main()
