"""Ranks under a budget on MiniLM: uniform plain, uniform whitened, greedy whitened.

At the same parameter budget (a fraction of the targeted denses' weights), three
ways to factorize MiniLM: one rank everywhere by plain SVD, one rank everywhere by
whitened SVD (calibrated on reviews), and per-layer ranks chosen greedily to
minimise the total whitened truncation error (``surgery.factorize(budget=,
allocation="greedy")``; ``lowrank_jax/ranks.py``). Measured as ``run.py``
measures: mean and min cosine of held-out reviews' embeddings to the original
model's, and the trec / reviews linear probes, plus each model's ranks.

    python experiments/svd_compression/budget.py          # FFN and all linear layers
    python experiments/svd_compression/budget.py --quick  # one budget, tiny sizes (CI)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lowrank_jax import build, surgery
from lowrank_jax.config import load_module
from lowrank_jax.data import text
from lowrank_jax.models import pretrained

HERE = Path(__file__).parent
RUN = load_module(HERE / "run.py")
METHODS = {  # name -> (allocation, calibrated)
    "uniform plain": ("uniform", False),
    "uniform whitened": ("uniform", True),
    "greedy whitened": ("greedy", True),
}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--targets", default="ffn,all")
    parser.add_argument("--budgets", default="0.35,0.5,0.65")
    parser.add_argument("--sentences", type=int, default=200, help="held out; as many calibrate")
    parser.add_argument("--probe", type=int, default=1000, help="probe train (and test) size")
    parser.add_argument("--out", default=str(HERE / "results" / "budget.json"))
    args = parser.parse_args(argv)
    budgets = [float(b) for b in args.budgets.split(",")]
    count = args.sentences
    if args.quick:
        budgets, count, args.probe = budgets[1:2], 16, 32

    reviews, _ = text.read("reviews")
    order = np.random.default_rng(0).permutation(len(reviews))  # run.py's split
    held_out = [reviews[i] for i in order[:count]]
    calibration = [reviews[i] for i in order[count : 2 * count]]
    config = RUN.minilm_config(lr=1e-4, trainable="all", batch_size=32)
    original = build.model(config.model, rngs=build.run_rngs(config.seed))
    tokenizer = pretrained.tokenizer_from(pretrained.model_dir(RUN.MODEL))
    reference = pretrained.embed(original, tokenizer, held_out)
    probes = RUN.Probes(args.probe)
    out = Path(args.out)
    done = [] if args.quick or not out.exists() else json.loads(out.read_text())
    kept = {(r["targets"], r["budget"], r["method"]): r for r in done}
    rows = done[:1] or [
        {"targets": None, "budget": None, "method": "original", **probes(original, tokenizer)}
    ]
    for targets in args.targets.split(","):
        pattern, base = RUN.TARGETS[targets], RUN.target_params(original, targets)
        for budget in budgets:
            for method, (allocation, calibrated) in METHODS.items():
                if (targets, budget, method) in kept:  # measured by a run that stopped
                    rows.append(kept[targets, budget, method])
                    continue
                model = build.model(config.model, rngs=build.run_rngs(config.seed))
                model.eval()
                cal = list(pretrained.batches(tokenizer, calibration, 32)) if calibrated else None
                surgery.factorize(
                    model, pattern, budget=budget, allocation=allocation, calibration=cal
                )
                cosine = np.sum(pretrained.embed(model, tokenizer, held_out) * reference, axis=-1)
                ranks = surgery.ranks(model)
                row = {
                    "targets": targets,
                    "budget": budget,
                    "method": method,
                    "params_kept": RUN.target_params(model, targets) / base,
                    "mean_cosine": float(cosine.mean()),
                    "min_cosine": float(cosine.min()),
                    "ranks": ranks,
                    **probes(model, tokenizer),
                }
                rows.append(row)
                print(
                    f"{targets} budget {budget} {method:16s} params {row['params_kept']:.3f} "
                    f"cosine {row['mean_cosine']:.4f} (min {row['min_cosine']:.4f}) ranks "
                    f"{min(ranks.values())}-{max(ranks.values())}",
                    flush=True,
                )
                if not args.quick:  # after every row: a stopped run resumes
                    out.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
