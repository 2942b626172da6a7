"""The LoRA paper's Fig. 3 on all-MiniLM-L6-v2: subspace similarity of A at R = 8 and R = 64.

    φ(A_8, A_64, i, j) = ‖U_8[:, :i]ᵀ U_64[:, :j]‖²_F / min(i, j)  ∈ [0, 1]

where U_R are the singular vectors of the learned LoRA factor A_R ([in, R] here,
the paper's Aᵀ) on the input side, for ΔW_q and ΔW_v of every layer, from the
``lora_minilm`` sweep's runs of one task (LoRA on W_q, W_v at R = 8 and 64).

    python experiments/lora_subspace/run.py --runs trec=runs/lora_minilm_trec \\
        reviews=runs/lora_minilm_reviews

Beside φ it reports what a reader needs to judge it: φ of random Gaussian
factors of the same shapes (the chance level, about j / in), and how far
training moved A from its random initialisation (‖A − A₀‖ / ‖A₀‖), since A
starts random and φ of two untrained factors is the chance level.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ml_collections
import numpy as np
from flax import nnx
from matplotlib.figure import Figure

from lowrank_jax.train.state import load_model, model_and_optimizer

HERE = Path(__file__).parent
PROJECTIONS = ("query", "value")


def phi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """φ(a, b, i, j) for i ≤ rank(a), j ≤ rank(b): a [in, Ra], b [in, Rb] -> [Ra, Rb]."""
    ua = np.linalg.svd(a, full_matrices=False)[0]
    ub = np.linalg.svd(b, full_matrices=False)[0]
    overlap = (ua.T @ ub) ** 2  # [Ra, Rb]
    cumulative = overlap.cumsum(0).cumsum(1)
    i, j = np.meshgrid(np.arange(1, a.shape[1] + 1), np.arange(1, b.shape[1] + 1), indexing="ij")
    return cumulative / np.minimum(i, j)


def lora_factors(model: nnx.Module) -> dict[tuple[int, str], np.ndarray]:
    """{(layer, "query" | "value"): A} of a model with LoRA on W_q, W_v."""
    return {
        (index, name): np.asarray(getattr(layer.attention, name).lora_a.get_value())
        for index, layer in enumerate(model.layers)
        for name in PROJECTIONS
    }


def find_run(directory: Path, rank: int) -> Path:
    """The run under ``directory`` with LoRA of ``rank`` on W_q, W_v only."""
    for config_path in sorted(directory.glob("*/config.json")):
        lora = json.loads(config_path.read_text())["model"]["lora"]
        finished = (config_path.parent / "summary.json").exists()
        if finished and lora["rank"] == rank and "ffn" not in lora["targets"]:
            return config_path.parent
    raise FileNotFoundError(f"{directory}: no finished LoRA R={rank} run on W_q, W_v")


def initial_factors(run: Path) -> dict[tuple[int, str], np.ndarray]:
    """A at initialisation: the run's config rebuilt with its seeds."""
    config = ml_collections.ConfigDict(json.loads((run / "config.json").read_text()))
    return lora_factors(model_and_optimizer(config)[0])


def analyse(directory: Path, small: int = 8, large: int = 64) -> dict:
    runs = {rank: find_run(directory, rank) for rank in (small, large)}
    learned = {rank: lora_factors(load_model(run)) for rank, run in runs.items()}
    start = {rank: initial_factors(run) for rank, run in runs.items()}
    rng = np.random.default_rng(0)
    result = {"phi": {}, "random_phi": {}, "moved": {}}
    for key in learned[small]:
        a, b = learned[small][key], learned[large][key]
        name = f"{key[0]}.{key[1]}"
        result["phi"][name] = phi(a, b)
        result["random_phi"][name] = phi(rng.normal(size=a.shape), rng.normal(size=b.shape))
        result["moved"][name] = {
            rank: float(
                np.linalg.norm(learned[rank][key] - start[rank][key])
                / np.linalg.norm(start[rank][key])
            )
            for rank in (small, large)
        }
    return result


def heatmaps(results: dict[str, dict], layer: int, path: Path) -> None:
    """The paper's Fig. 3 layout: per task and projection, φ over i ≤ 8, j ≤ 64 and j ≤ 8."""
    rows = [(task, proj) for task in results for proj in PROJECTIONS]
    fig = Figure(figsize=(10, 1.9 * len(rows)))
    axes = fig.subplots(len(rows), 2, squeeze=False, width_ratios=[3, 1])
    for (task, proj), (wide, narrow) in zip(rows, axes, strict=True):
        grid = results[task]["phi"][f"{layer}.{proj}"]
        for ax, cols in ((wide, grid.shape[1]), (narrow, grid.shape[0])):
            image = ax.imshow(grid[:, :cols], vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.set_xticks(range(0, cols, max(1, cols // 8)))
            ax.set_xticklabels(range(1, cols + 1, max(1, cols // 8)))
            ax.set_yticks(range(grid.shape[0]))
            ax.set_yticklabels(range(1, grid.shape[0] + 1))
            ax.set_xlabel("j (R = 64)")
        wide.set_ylabel(f"{task}\nΔW_{proj[0]}, i (R = 8)")
    fig.colorbar(image, ax=axes, shrink=0.6, label="φ")
    fig.suptitle(f"φ(A_8, A_64, i, j), layer {layer} of MiniLM")
    fig.savefig(path, dpi=100)


def summary_table(results: dict[str, dict]) -> str:
    lines = [
        "| task | projection | φ(1, 1) | φ(1, 64) | mean φ(i ≤ 8, j ≤ 8) | random φ(i ≤ 8, j ≤ 8) "
        "| ‖A−A₀‖/‖A₀‖ R=8 | R=64 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for task, result in results.items():
        for proj in PROJECTIONS:
            names = [n for n in result["phi"] if n.endswith(proj)]
            grids = np.stack([result["phi"][n] for n in names])
            chance = np.stack([result["random_phi"][n] for n in names])
            moved = [result["moved"][n] for n in names]
            lines.append(
                f"| {task} | ΔW_{proj[0]} (mean of {len(names)} layers) | "
                f"{grids[:, 0, 0].mean():.3f} | {grids[:, 0, -1].mean():.3f} | "
                f"{grids[:, :, :8].mean():.3f} | {chance[:, :, :8].mean():.3f} | "
                f"{np.mean([m[8] for m in moved]):.3f} | {np.mean([m[64] for m in moved]):.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, metavar="TASK=DIR")
    parser.add_argument("--layer", type=int, default=5, help="the layer drawn (0-5)")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    results = {}
    for item in args.runs:
        task, sep, directory = item.partition("=")
        if not sep or not Path(directory).is_dir():
            parser.error(f"--runs: expected TASK=DIR with an existing DIR, got {item!r}")
        results[task] = analyse(Path(directory))
    text = summary_table(results)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(text)
    heatmaps(results, args.layer, out / "phi.png")
    plain = {
        task: {
            "phi": {k: v.round(4).tolist() for k, v in r["phi"].items()},
            "moved": r["moved"],
        }
        for task, r in results.items()
    }
    (out / "phi.json").write_text(json.dumps(plain) + "\n")
    return results


if __name__ == "__main__":
    main()
