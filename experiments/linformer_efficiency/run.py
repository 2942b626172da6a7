"""Linformer (Wang et al. 2020, arXiv 2006.04768) Table 3: inference time and memory saved.

For sequence lengths N and projected lengths P < N, the forward pass (eval
mode, one device) of LRA's byte-level text model with Linformer attention
against the same model with softmax attention: time saved = t_softmax /
t_linformer and memory saved = m_softmax / m_linformer, both measured in the
same run (memory: the compiled program's arguments + outputs + temporaries).

The paper's own memory metric is measured too (``--paper-memory``: compiles
only, so it may run beside other work): memory saved = the largest batch that
fits a 16 GiB V100 with Linformer (layerwise sharing, the paper's setting) /
the largest with a standard Transformer (XLA's exact attention, which forms the
N × N scores), each found from XLA's compiled memory account
(``bench.largest_batch``), nothing allocated.

    python experiments/linformer_efficiency/run.py           # N = 512..8192, writes results/
    python experiments/linformer_efficiency/run.py --paper-memory   # adds the batch ratios
    python experiments/linformer_efficiency/run.py --quick   # tiny shapes (CI)
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from matplotlib.figure import Figure

from lowrank_jax import bench

HERE = Path(__file__).parent


def measure(lengths, proj_lens, batch, repeats, tiny) -> list[dict]:
    rows = []
    for length in lengths:
        model = bench.lra_text_config(length, tiny=tiny)
        base = bench.EncoderForward(model, batch, length)
        base_s = base.seconds(repeats)
        print(f"N={length:>6} softmax   {base_s * 1e3:9.1f} ms {base.bytes / 2**20:8.1f} MiB")
        for proj_len in (p for p in proj_lens if p < length):
            model.attention.kind = "linformer"
            model.attention.linformer.proj_len = proj_len
            forward = bench.EncoderForward(model, batch, length)
            seconds = forward.seconds(repeats)
            rows.append(
                {
                    "length": length,
                    "proj_len": proj_len,
                    "softmax_s": base_s,
                    "linformer_s": seconds,
                    "softmax_bytes": base.bytes,
                    "linformer_bytes": forward.bytes,
                    "softmax_flops": base.flops,
                    "linformer_flops": forward.flops,
                    "time_saved": base_s / seconds,
                    "memory_saved": base.bytes / forward.bytes,
                }
            )
            print(
                f"N={length:>6} P={proj_len:<5} {seconds * 1e3:9.1f} ms "
                f"{forward.bytes / 2**20:8.1f} MiB  time saved {base_s / seconds:.1f}x, "
                f"memory saved {base.bytes / forward.bytes:.1f}x",
                flush=True,
            )
    return rows


V100_BYTES = 16 * 2**30  # the paper's GPU


def paper_memory(lengths, proj_lens, limit_bytes, tiny) -> list[dict]:
    """The paper's memory saved: largest batches that fit, Linformer (layerwise) / Transformer."""
    rows = []
    for length in lengths:
        model = bench.lra_text_config(length, tiny=tiny)
        model.attention.softmax.implementation = "xla"  # the standard Transformer's scores
        softmax_batch = bench.largest_batch(model, length, limit_bytes)
        for proj_len in (p for p in proj_lens if p < length):
            model.attention.kind = "linformer"
            model.attention.linformer.update(proj_len=proj_len, sharing="layerwise")
            batch = bench.largest_batch(model, length, limit_bytes)
            rows.append(
                {
                    "length": length,
                    "proj_len": proj_len,
                    "softmax_batch": softmax_batch,
                    "linformer_batch": batch,
                    "memory_saved": batch / softmax_batch,
                }
            )
            print(
                f"N={length:>6} P={proj_len:<5} largest batch {batch} vs {softmax_batch}: "
                f"memory saved {batch / softmax_batch:.1f}x",
                flush=True,
            )
            model.attention.kind = "softmax"
    return rows


def tables(rows, lengths, proj_lens, batch) -> str:
    lines = []
    for key, title in (("time_saved", "Time saved"), ("memory_saved", "Memory saved")):
        lines += [
            f"{title} (softmax / Linformer), forward pass, batch {batch}:",
            "",
            "| N | " + " | ".join(f"P = {p}" for p in proj_lens) + " |",
            "|---:|" + "---:|" * len(proj_lens),
        ]
        for n in lengths:
            cells = []
            for p in proj_lens:
                row = next((r for r in rows if r["length"] == n and r["proj_len"] == p), None)
                cells.append("—" if row is None else f"{row[key]:.1f}×")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(rows, proj_lens, path: Path) -> None:
    fig = Figure(figsize=(11, 4))
    for ax, key, ylabel in zip(
        fig.subplots(1, 2),
        ("time_saved", "memory_saved"),
        ("time saved (softmax / Linformer)", "memory saved (softmax / Linformer)"),
        strict=True,
    ):
        for p in proj_lens:
            mine = [r for r in rows if r["proj_len"] == p]
            if mine:
                ax.plot([r["length"] for r in mine], [r[key] for r in mine], "o-", label=f"P={p}")
        ax.axhline(1.0, color="gray", linestyle=":")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 64, 128; P = 16, 32; tiny")
    parser.add_argument("--lengths", default="512,1024,2048,4096,8192")
    parser.add_argument("--proj-lens", default="128,256,512,1024,2048")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument(
        "--paper-memory",
        action="store_true",
        help="only the paper's memory metric (largest batches in 16 GiB), added to results.json",
    )
    args = parser.parse_args(argv)
    if args.paper_memory and not args.quick:
        lengths = [int(n) for n in args.lengths.split(",")]
        proj_lens = [int(p) for p in args.proj_lens.split(",")]
        path = Path(args.out) / "results.json"
        record = json.loads(path.read_text())
        record["paper_memory"] = {
            "limit_bytes": V100_BYTES,
            "rows": paper_memory(lengths, proj_lens, V100_BYTES, tiny=False),
        }
        path.write_text(json.dumps(record, indent=1) + "\n")
        return record["paper_memory"]["rows"]
    if args.quick:
        lengths, proj_lens, batch, repeats = [64, 128], [16, 32], 2, 2
    else:
        lengths = [int(n) for n in args.lengths.split(",")]
        proj_lens = [int(p) for p in args.proj_lens.split(",")]
        batch, repeats = args.batch, args.repeats
    load_before = list(os.getloadavg())
    rows = measure(lengths, proj_lens, batch, repeats, tiny=args.quick)
    if args.quick:  # the paper's metric too, at a limit tiny shapes reach
        paper_memory(lengths, proj_lens, 4 * 2**20, tiny=True)
    table = tables(rows, lengths, proj_lens, batch)
    print(table)
    if not args.quick:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(table)
        record = {"machine": bench.machine(), "batch": batch, "rows": rows}
        record["load"] = {"before": load_before, "after": list(os.getloadavg())}
        previous = out / "results.json"
        if previous.exists() and "paper_memory" in json.loads(previous.read_text()):
            record["paper_memory"] = json.loads(previous.read_text())["paper_memory"]  # kept
        previous.write_text(json.dumps(record, indent=1) + "\n")
        plot(rows, proj_lens, out / "saved.png")
    return rows


if __name__ == "__main__":
    main()
