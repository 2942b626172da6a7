"""The latency claim: forward time per example of a factorized FFN against R.

One claim for low-rank layers is that factorized layers give lower inference
latency. This times the jitted forward pass (eval mode, ``bench.EncoderForward``) of a
MiniLM-sized encoder (6 layers, width 384, FFN 1536, 12 heads, N = 128; the
shape of all-MiniLM-L6-v2, the model `svd_compression` factorizes) with a dense
FFN and with factorized FFNs of rank R, at batch 1 (one request) and a serving
batch (32), on this CPU. A rank-R factor pair has R (D + F) weights against
D F, so it saves FLOPs below the break-even rank D F / (D + F) = 307; the
measured break-even is where the factorized time per example crosses the
dense one's (linear interpolation between the neighbouring ranks).

Every model of a batch size is compiled first, then timed round-robin (each
round times every model once, ``--repeats`` calls each), and a model's figure
is its median over rounds, so a slow minute of the machine hits every rank
alike. Times are wall-clock (the file keeps the machine's load averages before
and after, which the table prints); the table reports ratios to the dense model
of the same run.

    python experiments/seed_claims/latency.py               # writes results/latency.json
    python experiments/seed_claims/latency.py --quick       # tiny shapes, seconds
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
from pathlib import Path

from lowrank_jax import bench
from lowrank_jax.models import default_config

HERE = Path(__file__).parent
RANKS = (16, 32, 64, 128, 192, 256, 320, 384)
QUICK_RANKS = (2, 8, 16)


def model_config(rank: int, *, quick: bool = False):
    """MiniLM's shape (or a tiny one) with a dense FFN (``rank`` 0) or a factorized one."""
    model = default_config()
    model.update(
        vocab_size=30522 if not quick else 256,
        num_classes=2,
        max_len=128 if not quick else 16,
        dim=384 if not quick else 32,
        heads=12 if not quick else 2,
        num_layers=6 if not quick else 1,
        dropout=0.0,
        pooling="mean",
    )
    model.ffn.dim = 1536 if not quick else 64
    if rank:
        model.ffn.dense.kind, model.ffn.dense.rank = "factorized", rank
    return model


def break_even(dim: int, ffn: int) -> float:
    """The rank at which a factor pair has as many weights (and FLOPs) as the dense matrix."""
    return dim * ffn / (dim + ffn)


def crossing(ranks: list[int], ratios: list[float]) -> float | None:
    """The first rank where ``ratio`` (factorized / dense time) reaches 1, interpolated.

    None when every measured rank stays below 1 (or the first is already at or above it).

    Example:
      >>> crossing([64, 128, 256], [0.5, 0.8, 1.2])
      192.0
    """
    for (r0, q0), (r1, q1) in itertools.pairwise(zip(ranks, ratios, strict=True)):
        if q0 < 1 <= q1:
            return r0 + (1 - q0) * (r1 - r0) / (q1 - q0)
    return None


def measure(batch: int, ranks: tuple[int, ...], length: int, rounds: int, repeats: int, quick):
    """Per-example seconds of the dense model and each rank, medians over round-robin rounds."""
    models = {
        r: bench.EncoderForward(model_config(r, quick=quick), batch, length) for r in (0, *ranks)
    }
    times: dict[int, list[float]] = {r: [] for r in models}
    for _ in range(rounds):
        for rank, forward in models.items():
            times[rank].append(forward.seconds(repeats) / batch)
    return {rank: statistics.median(t) for rank, t in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,32", help="batch sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per round")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (the test)")
    parser.add_argument("--out", default=str(HERE / "results" / "latency.json"))
    args = parser.parse_args(argv)
    ranks = QUICK_RANKS if args.quick else RANKS
    config = model_config(0, quick=args.quick)
    length = config.max_len
    rows = []
    load_before = list(os.getloadavg())
    for batch in (int(b) for b in args.batches.split(",")):
        seconds = measure(batch, ranks, length, args.rounds, args.repeats, args.quick)
        ratios = [seconds[r] / seconds[0] for r in ranks]
        rows.append(
            {
                "batch": batch,
                "dense_s_per_example": seconds[0],
                "s_per_example": {str(r): seconds[r] for r in ranks},
                "ratio_to_dense": {str(r): q for r, q in zip(ranks, ratios, strict=True)},
                "measured_break_even": crossing(list(ranks), ratios),
            }
        )
    record = {
        "model": {
            "dim": config.dim,
            "ffn": config.ffn.dim,
            "layers": config.num_layers,
            "heads": config.heads,
            "length": length,
        },
        "ranks": list(ranks),
        "flop_break_even": break_even(config.dim, config.ffn.dim),
        "rounds": args.rounds,
        "repeats": args.repeats,
        "rows": rows,
        "machine": bench.machine(),
        "load": {"before": load_before, "after": list(os.getloadavg())},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
