"""LRA (Tay et al. 2020, arXiv 2011.04006) Table 2: training speed and memory against N.

Times the trainer's own training step (forward, backward, AdamW update; one
device) of LRA's byte-level text model (4 layers, embedding 256, 4 heads, MLP
1024, vocabulary 256) with softmax, Linformer (P = 256) and Performer (M = 256)
attention, each with a dense and a factorized FFN (rank 64), at sequence
lengths N, and the compiled step's memory (XLA's account: arguments + outputs
+ temporaries - donated). Ratios are to the Transformer (softmax, dense FFN) at
the same N, measured in the same run. Beside them, with a dense FFN, the two
with LRA's own text settings (``LRA_SETTINGS``, from its released
``text_classification/configs``): Linformer ``low_rank_features = 32`` (one
projection for keys and values, our sharing ``kv``) and the Performer's default
generalized attention, the ReLU kernel on the queries and keys themselves
(``features_type = 'deterministic'``, no random features).

The exact-attention baseline is also timed alone (forward + backward of
softmax attention at [B, N, 4, 64]) against PyTorch's
``scaled_dot_product_attention`` on the same machine, when torch is importable,
so that no speed-up rests on a slow baseline.

    python experiments/lra_speed_memory/run.py                # N = 1K..4K, writes results/
    python experiments/lra_speed_memory/run.py --lengths 1024,2048,4096,8192,16384
    python experiments/lra_speed_memory/run.py --quick        # tiny shapes (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax
from matplotlib.figure import Figure

from lowrank_jax import bench
from lowrank_jax.attention.softmax import attend
from lowrank_jax.config import train_defaults

HERE = Path(__file__).parent
KINDS = ("softmax", "linformer", "performer")
HEADS = 4
# model name -> (kind, its options): LRA's text configs, dense FFN (see the docstring)
LRA_SETTINGS = {
    "linformer, LRA's P=32 kv": ("linformer", {"proj_len": 32, "sharing": "kv"}),
    "performer, LRA's ReLU deterministic": (
        "performer",
        {"kernel": "relu", "features_type": "deterministic"},
    ),
}


def model_config(length: int, kind: str, ffn_rank: int, quick: bool, options=None):
    model = bench.lra_text_config(length, tiny=quick)
    model.attention.kind = kind
    model.attention[kind].update(options or {})
    if ffn_rank:
        model.ffn.dense.kind, model.ffn.dense.rank = "factorized", ffn_rank
    return model


def torch_sdpa_seconds(batch: int, length: int, head_dim: int, repeats: int) -> float | None:
    """Forward + backward of PyTorch's scaled_dot_product_attention, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    generator = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(batch, HEADS, length, head_dim, generator=generator, requires_grad=True)
        for _ in range(3)
    )

    def run():
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        out.sum().backward()

    return bench.median_seconds(run, repeats)  # run() returns None: nothing to block on


def jax_attention_seconds(batch: int, length: int, head_dim: int, repeats: int) -> float:
    """Forward + backward of our softmax attention as the model runs it (``implementation``
    ``auto``: the blocked kernel on the CPU from N = 1024, else XLA's)."""
    q, k, v = jax.random.normal(jax.random.key(0), (3, batch, length, HEADS, head_dim))

    def loss(q, k, v):
        return attend(q, k, v, implementation="auto").sum()

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    return bench.median_seconds(lambda: grad(q, k, v), repeats)


def measure(lengths, batch, repeats, ffn_rank, quick, max_exact) -> list[dict]:
    train = train_defaults().train
    rows = []
    models = [
        (f"{kind}{f', FFN R={rank}' if rank else ''}", kind, rank, {})
        for kind in KINDS
        for rank in (0, ffn_rank)
        if not (quick and rank and kind != "softmax")  # quick: one factorized variant
    ] + [(name, kind, 0, options) for name, (kind, options) in LRA_SETTINGS.items()]
    for length in lengths:
        for name, kind, rank, options in models:
            if kind == "softmax" and length > max_exact:
                rows.append({"model": name, "length": length, "status": "not run"})
                continue
            step = bench.EncoderStep(
                model_config(length, kind, rank, quick, options), train, batch, length
            )
            seconds = step.seconds(repeats)
            row = {"model": name, "length": length, "step_s": seconds, "bytes": step.bytes}
            rows.append(row | {"flops": step.flops, "status": "done", "traces": step.step.traces})
            print(
                f"N={length:>6} {name:<24} {seconds * 1e3:9.1f} ms/step "
                f"{step.bytes / 2**20:9.1f} MiB",
                flush=True,
            )
            del step
    reference = {r["length"]: r for r in rows if r["model"] == "softmax" and "step_s" in r}
    for row in rows:
        base = reference.get(row["length"])
        if base and "step_s" in row:
            row["speedup"] = base["step_s"] / row["step_s"]
            row["memory_ratio"] = row["bytes"] / base["bytes"]
    return rows


def attention_rows(lengths, batch, repeats, head_dim, max_exact) -> list[dict]:
    rows = []
    for length in (n for n in lengths if n <= max_exact):
        ours = jax_attention_seconds(batch, length, head_dim, repeats)
        torch = torch_sdpa_seconds(batch, length, head_dim, repeats)
        rows.append({"length": length, "jax_s": ours, "torch_sdpa_s": torch})
        print(
            f"N={length:>6} attention fwd+bwd: ours {ours * 1e3:.1f} ms, SDPA "
            f"{'—' if torch is None else f'{torch * 1e3:.1f} ms'}",
            flush=True,
        )
    return rows


def _ms(seconds) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.1f}"


def tables(rows, attention, lengths, batch) -> str:
    lines = [
        f"Training step (fwd + bwd + AdamW), batch {batch}: steps/s (speed-up to softmax), "
        "compiled memory MiB (ratio to softmax).",
        "",
        "| model | " + " | ".join(f"N = {n}" for n in lengths) + " |",
        "|---|" + "---:|" * len(lengths),
    ]
    for name in dict.fromkeys(r["model"] for r in rows):
        cells = []
        for n in lengths:
            row = next(r for r in rows if r["model"] == name and r["length"] == n)
            if "step_s" not in row:
                cells.append(row["status"])
                continue
            cell = f"{1 / row['step_s']:.2f}/s"
            if "speedup" in row:
                cell += f" ({row['speedup']:.1f}×)"
            cell += f", {row['bytes'] / 2**20:.0f} MiB"
            if "memory_ratio" in row:
                cell += f" ({row['memory_ratio']:.2f}×)"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Softmax attention alone, forward + backward, [B={batch}, N, H={HEADS}, K]: ms "
        "(ours = `jax.nn.dot_product_attention` through `attention.softmax.attend`).",
        "",
        "| N | ours (ms) | PyTorch SDPA (ms) | ours / SDPA |",
        "|---:|---:|---:|---:|",
    ]
    for row in attention:
        ratio = "—" if row["torch_sdpa_s"] is None else f"{row['jax_s'] / row['torch_sdpa_s']:.2f}"
        lines.append(
            f"| {row['length']} | {_ms(row['jax_s'])} | {_ms(row['torch_sdpa_s'])} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows, path: Path) -> None:
    fig = Figure(figsize=(11, 4))
    speed, memory = fig.subplots(1, 2)
    for name in dict.fromkeys(r["model"] for r in rows):
        done = [r for r in rows if r["model"] == name and "step_s" in r]
        lengths = [r["length"] for r in done]
        style = "--" if "FFN" in name else "-"
        speed.plot(lengths, [1 / r["step_s"] for r in done], "o" + style, label=name)
        memory.plot(lengths, [r["bytes"] / 2**20 for r in done], "o" + style, label=name)
    for ax, ylabel in ((speed, "training steps / s"), (memory, "compiled memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 64; 1 tiny layer")
    parser.add_argument("--lengths", default="1024,2048,3072,4096")
    parser.add_argument("--batch", type=int, default=4, help="LRA: 32 (on TPU v3)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ffn-rank", type=int, default=64)
    parser.add_argument(
        "--max-exact-len", type=int, default=4096, help="longest N timed with softmax attention"
    )
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    if args.quick:
        lengths, batch, repeats, ffn_rank = [64], 2, 2, 8
    else:
        lengths, batch, repeats, ffn_rank = (
            [int(n) for n in args.lengths.split(",")],
            args.batch,
            args.repeats,
            args.ffn_rank,
        )
    began, load_before = time.perf_counter(), list(os.getloadavg())
    rows = measure(lengths, batch, repeats, ffn_rank, args.quick, args.max_exact_len)
    head_dim = (32 if args.quick else 256) // HEADS
    attention = attention_rows(lengths, batch, repeats, head_dim, args.max_exact_len)
    table = tables(rows, attention, lengths, batch)
    print(table)
    result = {"machine": bench.machine(), "batch": batch, "rows": rows, "attention": attention}
    result |= {"repeats": repeats, "seconds": time.perf_counter() - began}
    result["load"] = {"before": load_before, "after": list(os.getloadavg())}
    if not args.quick:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(table)
        (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
        plot(rows, out / "speed_memory.png")
    return result


if __name__ == "__main__":
    main()
