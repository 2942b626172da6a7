"""SVD compression of all-MiniLM-L6-v2: plain vs activation-aware (SVD-LLM) truncation.

Factorizes MiniLM's six FFNs (both denses) at several ranks, by plain truncated
SVD of the weights and by whitened SVD (``surgery.factorize(..., calibration=)``,
SVD-LLM, arXiv 2403.07378) calibrated on movie-review sentences, and measures
embedding fidelity: the cosine between each held-out sentence's embedding and
the original model's, against the FFN parameters and multiply-adds kept.

    python experiments/svd_compression/run.py          # ranks 64..256, writes results/
    python experiments/svd_compression/run.py --quick  # one rank, 16 sentences (CI)

Recovery (distillation to the original embeddings, or LoRA) after truncation
is not in this script yet.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from flax import nnx
from matplotlib.figure import Figure

from lowrank_jax import surgery
from lowrank_jax.data import text
from lowrank_jax.layers import macs_per_token
from lowrank_jax.models import pretrained

HERE = Path(__file__).parent
FFN = r"layers\.\d+\.ffn\.(up|down)"


def ffn_params(model) -> int:
    """Parameters of the FFN denses (kernels or factors, and biases)."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return sum(int(np.prod(v.shape)) for path, v in flat if "ffn" in map(str, path))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ranks", default="64,128,153,192,256")
    parser.add_argument("--sentences", type=int, default=200, help="held out; as many calibrate")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    ranks = [153] if args.quick else [int(r) for r in args.ranks.split(",")]
    count = 16 if args.quick else args.sentences

    reviews, _ = text.read("reviews")
    order = np.random.default_rng(0).permutation(len(reviews))
    held_out = [reviews[i] for i in order[:count]]
    calibration = [reviews[i] for i in order[count : 2 * count]]

    original, tokenizer = pretrained.load("all-MiniLM-L6-v2")
    reference = pretrained.embed(original, tokenizer, held_out)
    base_params, base_macs = ffn_params(original), macs_per_token(original)
    rows = []
    for rank in ranks:
        for method in ("plain", "whitened"):
            model, _ = pretrained.load("all-MiniLM-L6-v2")
            model.eval()
            cal = None
            if method == "whitened":  # padded positions are left out of XᵀX by the mask
                cal = list(pretrained.batches(tokenizer, calibration, 32))
            surgery.factorize(model, FFN, rank=rank, calibration=cal)
            cosine = np.sum(pretrained.embed(model, tokenizer, held_out) * reference, axis=-1)
            row = {
                "rank": rank,
                "method": method,
                "ffn_params_kept": ffn_params(model) / base_params,
                "macs_kept": macs_per_token(model) / base_macs,
                "mean_cosine": float(cosine.mean()),
                "min_cosine": float(cosine.min()),
            }
            rows.append(row)
            print(
                f"R={rank:4d} {method:9s} FFN params {row['ffn_params_kept']:.2f}, "
                f"MACs {row['macs_kept']:.2f}, cosine mean {row['mean_cosine']:.4f} "
                f"min {row['min_cosine']:.4f}",
                flush=True,
            )
    lines = [
        f"MiniLM, all six FFNs factorized; cosine to the original embedding on {count} held-out "
        f"movie reviews; whitened = calibrated on {count} other reviews.",
        "",
        "| R | FFN params kept | model MACs/token kept | plain SVD: mean (min) cosine "
        "| whitened SVD: mean (min) cosine |",
        "|---:|---:|---:|---:|---:|",
    ]
    for rank in ranks:
        plain, white = (
            next(r for r in rows if r["rank"] == rank and r["method"] == m)
            for m in ("plain", "whitened")
        )
        lines.append(
            f"| {rank} | {plain['ffn_params_kept']:.2f} | {plain['macs_kept']:.2f} | "
            f"{plain['mean_cosine']:.3f} ({plain['min_cosine']:.3f}) | "
            f"{white['mean_cosine']:.3f} ({white['min_cosine']:.3f}) |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.quick:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "fidelity.md").write_text(table)
        (out / "fidelity.json").write_text(json.dumps(rows, indent=1) + "\n")
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        for method in ("plain", "whitened"):
            mine = [r for r in rows if r["method"] == method]
            ax.plot(
                [r["ffn_params_kept"] for r in mine],
                [r["mean_cosine"] for r in mine],
                "o-",
                label=f"{method} SVD",
            )
        ax.set_xlabel("fraction of FFN parameters kept")
        ax.set_ylabel("mean cosine to the original embedding")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "fidelity.png", dpi=100)
    return rows


if __name__ == "__main__":
    main()
