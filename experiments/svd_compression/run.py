"""SVD compression of all-MiniLM-L6-v2: plain vs activation-aware truncation, and recovery.

Factorizes MiniLM's six FFNs (both denses; or the attention projections, or
both) at several ranks, by plain truncated SVD of the weights and by whitened
SVD (``surgery.factorize(..., calibration=)``, SVD-LLM, arXiv 2403.07378)
calibrated on movie-review sentences, then recovers the whitened model by a
short distillation: only the factors train, to bring each sentence's embedding
back to the original model's (loss 1 − cosine) on reviews that are neither
held out nor used for calibration, through the trainer's own step
(``train_state`` with ``train.loss = distillation``, teacher ``self``).
For every model it measures

- embedding fidelity: the cosine between each held-out sentence's embedding
  and the original model's, against the parameters and multiply-adds kept;
- task accuracy: a linear probe (multinomial logistic regression, fitted on
  that model's own embeddings) on trec and reviews.

    python experiments/svd_compression/run.py          # FFN, ranks 64..256, writes results/
    python experiments/svd_compression/run.py --targets attention --ranks 48,96,144
    python experiments/svd_compression/run.py --quick  # one rank, a few sentences (CI)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import ml_collections
import numpy as np
import scipy.optimize
from flax import nnx
from matplotlib.figure import Figure

from lowrank_jax import build, surgery
from lowrank_jax.config import train_defaults
from lowrank_jax.data import text
from lowrank_jax.layers import macs_per_token
from lowrank_jax.models import pretrained
from lowrank_jax.train import sharding
from lowrank_jax.train.state import single_device_mesh, train_state

HERE = Path(__file__).parent
MODEL = "all-MiniLM-L6-v2"
TARGETS = {
    "ffn": r"layers\.\d+\.ffn\.(up|down)",
    "attention": r"layers\.\d+\.attention\.(query|key|value|out)",
    "all": r"layers\.\d+\.(ffn\.(up|down)|attention\.(query|key|value|out))",
}


def target_params(model, targets: str) -> int:
    """Parameters of the targeted denses (kernels or factors, and biases)."""
    pattern = surgery.trainable_filter(model, TARGETS[targets] + r"\..*")
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, pattern)))


def minilm_config(*, lr: float, trainable: str, batch_size: int) -> ml_collections.ConfigDict:
    """The recovery's run config: MiniLM without dropout, distilled towards itself.

    ``train.loss = distillation`` with the teacher ``self`` (MiniLM before surgery)
    and the cosine metric; Adam at a constant ``lr`` (AdamW without decay or
    clipping), only ``trainable`` (the factors) trains.
    """
    config = train_defaults()
    config.model = pretrained.config_of(MODEL)
    config.model.dropout = 0.0  # train mode is then eval mode: the distillation is deterministic
    config.model.attention.dropout = 0.0
    config.train.update(
        loss="distillation",
        learning_rate=lr,
        schedule="constant",
        warmup_steps=0,
        weight_decay=0.0,
        grad_clip=0.0,
        trainable=trainable,
        batch_size=batch_size,
    )
    config.train.distillation.update(metric="cosine", teacher="self")
    return config


def distill(student, config, tokenizer, sentences, *, epochs: int):
    """Train ``student`` by the trainer's own step (``train_state``); mean loss per epoch.

    Sentences are reshuffled every epoch and padded per batch (lengths by 16);
    returns the trained model and the mean loss (1 − cosine to the teacher's
    embedding) of each epoch.
    """
    run = train_state(config, single_device_mesh(), student=student)
    state, batch_size = run.state, config.train.batch_size
    rng = np.random.default_rng(1)
    history = []
    for _ in range(epochs):
        shuffled = [sentences[i] for i in rng.permutation(len(sentences))]
        losses = []
        for batch in pretrained.batches(tokenizer, shuffled, batch_size):
            placed = sharding.place_batch(batch, run.mesh, len(batch["tokens"]))
            state, metrics = run.train_step(state, placed)
            losses.append(float(metrics["loss"]))
        history.append(float(np.mean(losses)))
    return run.merge(state), history


def probe_accuracy(train_x, train_y, test_x, test_y, l2: float = 1e-3) -> float:
    """Test accuracy of an L2-regularised multinomial logistic regression fitted by L-BFGS."""
    classes = int(train_y.max()) + 1
    x = np.concatenate([train_x, np.ones((len(train_x), 1))], axis=1).astype(np.float64)
    onehot = np.eye(classes)[train_y]

    def loss_and_grad(flat):
        w = flat.reshape(x.shape[1], classes)
        logits = x @ w
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        loss = -np.mean(np.sum(onehot * np.log(p + 1e-12), axis=1)) + l2 * np.sum(w**2)
        grad = x.T @ (p - onehot) / len(x) + 2 * l2 * w
        return loss, grad.ravel()

    w0 = np.zeros(x.shape[1] * classes)
    fit = scipy.optimize.minimize(loss_and_grad, w0, jac=True, method="L-BFGS-B")
    w = fit.x.reshape(x.shape[1], classes)
    test = np.concatenate([test_x, np.ones((len(test_x), 1))], axis=1)
    return float(np.mean((test @ w).argmax(axis=1) == test_y))


class Probes:
    """trec and reviews linear probes: fixed train/test sentences, any model's embeddings."""

    def __init__(self, size: int):
        self.tasks = {}
        for task in ("trec", "reviews"):
            splits = text.split(task)
            (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
            self.tasks[task] = (train_x[:size], train_y[:size], test_x[:size], test_y[:size])

    def __call__(self, model, tokenizer) -> dict[str, float]:
        out = {}
        for task, (train_x, train_y, test_x, test_y) in self.tasks.items():
            out[f"{task}_probe"] = probe_accuracy(
                pretrained.embed(model, tokenizer, train_x),
                train_y,
                pretrained.embed(model, tokenizer, test_x),
                test_y,
            )
        return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--targets", default="ffn", choices=TARGETS)
    parser.add_argument("--ranks", default="64,128,153,192,256")
    parser.add_argument("--sentences", type=int, default=200, help="held out; as many calibrate")
    parser.add_argument("--distill", type=int, default=4000, help="sentences for the recovery")
    parser.add_argument("--epochs", type=int, default=2, help="recovery epochs (0: none)")
    parser.add_argument("--lr", type=float, default=1e-4, help="recovery learning rate (Adam)")
    parser.add_argument("--probe", type=int, default=1000, help="probe train (and test) size")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    ranks = [int(r) for r in args.ranks.split(",")]
    count, batch_size = args.sentences, 32
    if args.quick:
        ranks, count, batch_size = ranks[2:3] or ranks[:1], 16, 16
        args.distill, args.probe = 32, 32

    reviews, _ = text.read("reviews")
    order = np.random.default_rng(0).permutation(len(reviews))
    held_out = [reviews[i] for i in order[:count]]
    calibration = [reviews[i] for i in order[count : 2 * count]]
    for_distill = [reviews[i] for i in order[2 * count : 2 * count + args.distill]]
    pattern = TARGETS[args.targets]

    config = minilm_config(lr=args.lr, trainable=pattern + r"\..*", batch_size=batch_size)
    original = build.model(config.model, rngs=build.run_rngs(config.seed))
    tokenizer = pretrained.tokenizer_from(pretrained.model_dir(MODEL))
    reference = pretrained.embed(original, tokenizer, held_out)
    probes = Probes(args.probe)
    base_params, base_macs = target_params(original, args.targets), macs_per_token(original)
    rows = [{"rank": None, "method": "original", **probes(original, tokenizer)}]

    def measure(model, rank, method, **extra):
        cosine = np.sum(pretrained.embed(model, tokenizer, held_out) * reference, axis=-1)
        row = {
            "rank": rank,
            "method": method,
            "params_kept": target_params(model, args.targets) / base_params,
            "macs_kept": macs_per_token(model) / base_macs,
            "mean_cosine": float(cosine.mean()),
            "min_cosine": float(cosine.min()),
            **probes(model, tokenizer),
            **extra,
        }
        rows.append(row)
        print(
            f"R={rank:4d} {method:9s} params {row['params_kept']:.2f}, MACs "
            f"{row['macs_kept']:.2f}, cosine mean {row['mean_cosine']:.4f} min "
            f"{row['min_cosine']:.4f}, probes trec {row['trec_probe']:.3f} "
            f"reviews {row['reviews_probe']:.3f}",
            flush=True,
        )

    for rank in ranks:
        for method in ("plain", "whitened"):
            model = build.model(config.model, rngs=build.run_rngs(config.seed))
            model.eval()
            cal = None
            if method == "whitened":  # padded positions are left out of XᵀX by the mask
                cal = list(pretrained.batches(tokenizer, calibration, 32))
            surgery.factorize(model, pattern, rank=rank, calibration=cal)
            measure(model, rank, method)
            if method == "whitened" and args.epochs:
                model, losses = distill(model, config, tokenizer, for_distill, epochs=args.epochs)
                measure(model, rank, "recovered", distill_loss=losses)
    tables = write_tables(rows, args, count)
    print(tables)
    if not args.quick:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{args.targets}.md").write_text(tables)
        (out / f"{args.targets}.json").write_text(json.dumps(rows, indent=1) + "\n")
        plot(rows, args.targets, out / f"{args.targets}.png")
    return rows


def write_tables(rows: list[dict], args, count: int) -> str:
    methods = [m for m in ("plain", "whitened", "recovered") if any(r["method"] == m for r in rows)]
    by = {(r["rank"], r["method"]): r for r in rows}
    ranks = sorted({r["rank"] for r in rows if r["rank"] is not None})
    lines = [
        f"MiniLM, {args.targets} factorized in all six layers; cosine to the original "
        f"embedding on {count} held-out movie reviews; whitened = calibrated on {count} other "
        f"reviews; recovered = whitened, then {args.epochs} epoch(s) of distillation on "
        f"{args.distill} further reviews (only the factors train).",
        "",
        "| R | params kept | model MACs/token kept | "
        + " | ".join(f"{m}: mean (min) cosine" for m in methods)
        + " |",
        "|---:|---:|---:|" + "---:|" * len(methods),
    ]
    for rank in ranks:
        first = by[rank, methods[0]]
        cells = [
            f"{by[rank, m]['mean_cosine']:.3f} ({by[rank, m]['min_cosine']:.3f})" for m in methods
        ]
        lines.append(
            f"| {rank} | {first['params_kept']:.2f} | {first['macs_kept']:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    original = by[None, "original"]
    lines += [
        "",
        f"Linear-probe accuracy (logistic regression on each model's embeddings, {args.probe} "
        f"train / up to {args.probe} test sentences per task); original MiniLM: trec "
        f"{original['trec_probe']:.3f}, reviews {original['reviews_probe']:.3f}.",
        "",
        "| R | "
        + " | ".join(f"trec {m}" for m in methods)
        + " | "
        + " | ".join(f"reviews {m}" for m in methods)
        + " |",
        "|---:|" + "---:|" * (2 * len(methods)),
    ]
    for rank in ranks:
        cells = [f"{by[rank, m][f'{t}_probe']:.3f}" for t in ("trec", "reviews") for m in methods]
        lines.append(f"| {rank} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], targets: str, path: Path) -> None:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for method in ("plain", "whitened", "recovered"):
        mine = [r for r in rows if r["method"] == method]
        if mine:
            ax.plot(
                [r["params_kept"] for r in mine],
                [r["mean_cosine"] for r in mine],
                "o-",
                label=method if method == "recovered" else f"{method} SVD",
            )
    ax.axhline(0.95, color="gray", lw=0.8, ls="--")
    ax.set_xlabel(f"fraction of {targets} parameters kept")
    ax.set_ylabel("mean cosine to the original embedding")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
