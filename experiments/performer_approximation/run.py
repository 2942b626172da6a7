"""Performer (Choromanski et al. 2020, arXiv 2009.14794) Fig. 4: approximation error against M.

MSE between FAVOR+ attention outputs and exact softmax attention for
positive (``exp``) and trigonometric (``sin``/``cos``) random features, each with
orthogonal and iid draws, against the number of features M, over seeds (mean
and standard deviation: error bars).

    python experiments/performer_approximation/run.py          # L = 4096, d = 16, 15 seeds
    python experiments/performer_approximation/run.py --quick  # L = 512, 3 seeds (CI)

Trigonometric features exist here only (this experiment needs them; the package's
``favor`` uses positive features): φ(x) = exp(‖x‖²/2)/√m [sin(ωx), cos(ωx)] with
m = M/2 frequencies, so both kinds have M feature dimensions.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from lowrank_jax.attention.performer import favor, random_features
from lowrank_jax.attention.softmax import attend

HERE = Path(__file__).parent


def trig_favor(q, k, v, features):
    """Attention with trigonometric random features (unbiased, but not positive)."""
    scale = q.shape[-1] ** -0.25

    def phi(x):
        x = x * scale
        projected = jnp.einsum("bnhk,mk->bnhm", x, features)
        norm = jnp.exp(0.5 * jnp.sum(x * x, -1, keepdims=True))
        return (
            norm
            * jnp.concatenate([jnp.sin(projected), jnp.cos(projected)], -1)
            / math.sqrt(features.shape[0])
        )

    phi_q, phi_k = phi(q), phi(k)
    numerator = jnp.einsum("bnhm,bhmk->bnhk", phi_q, jnp.einsum("bnhm,bnhk->bhmk", phi_k, v))
    denominator = jnp.einsum("bnhm,bhm->bnh", phi_q, phi_k.sum(1))
    return numerator / denominator[..., None]


def errors(length: int, head_dim: int, num_features: list[int], seeds: int, scale: float) -> dict:
    """{variant: {M: [mse per seed]}} for positive/trig x orthogonal/iid; q, k ~ N(0, scale² I)."""
    data = jax.random.normal(jax.random.key(0), (3, 1, length, 1, head_dim))
    q, k, v = scale * data[0], scale * data[1], data[2]
    exact = jax.jit(attend)(q, k, v)
    positive = jax.jit(lambda q, k, v, w: favor(q, k, v, w))
    trig = jax.jit(trig_favor)
    results: dict[str, dict[int, list[float]]] = {}
    for kind in ("positive", "trig"):
        for orthogonal in (True, False):
            name = f"{kind}, {'orthogonal' if orthogonal else 'iid'}"
            results[name] = {}
            for m in num_features:
                draws = m if kind == "positive" else m // 2
                mse = []
                for seed in range(seeds):
                    w = random_features(
                        jax.random.key(1000 + seed), draws, head_dim, orthogonal=orthogonal
                    )
                    out = positive(q, k, v, w) if kind == "positive" else trig(q, k, v, w)
                    mse.append(float(jnp.mean((out - exact) ** 2)))
                results[name][m] = mse
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="L = 512, 3 seeds, M = 16, 64")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    if args.quick:
        length, seeds, ms = 512, 3, [16, 64]
    else:
        length, seeds, ms = 4096, 15, [16, 32, 64, 128, 256]
    scales = (1.0, 0.5)
    results = {scale: errors(length, 16, ms, seeds, scale) for scale in scales}
    lines = []
    for scale, by_variant in results.items():
        lines += [
            f"MSE of the attention output to exact softmax attention, L = {length}, d = 16, "
            f"q, k ~ N(0, {scale}² I), v ~ N(0, I), {seeds} seeds: mean ± std.",
            "",
            "| features | " + " | ".join(f"M = {m}" for m in ms) + " |",
            "|---|" + "---:|" * len(ms),
        ]
        for name, by_m in by_variant.items():
            cells = [f"{np.mean(v):.2e} ± {np.std(v):.1e}" for v in by_m.values()]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    table = "\n".join(lines)
    print(table)
    if not args.quick:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "mse.md").write_text(table)
        record = {"length": length, "seeds": seeds, "mse": {str(s): r for s, r in results.items()}}
        (out / "mse.json").write_text(json.dumps(record, indent=1))
        fig = Figure(figsize=(11, 4))
        for ax, (scale, by_variant) in zip(fig.subplots(1, 2), results.items(), strict=True):
            for name, by_m in by_variant.items():
                means = [np.mean(v) for v in by_m.values()]
                stds = [np.std(v) for v in by_m.values()]
                ax.errorbar(ms, means, yerr=stds, marker="o", capsize=3, label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("random features M")
            ax.set_ylabel("MSE to exact attention output")
            ax.set_title(f"q, k ~ N(0, {scale}² I), L = {length}, d = 16, {seeds} seeds")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "mse.png", dpi=100)
    return results


if __name__ == "__main__":
    main()
