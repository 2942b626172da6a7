"""Generated blocks of experiments/lra_speed_memory/README.md, from results/results.json
and paper.json (LRA's Table 2)."""

from __future__ import annotations

import json
from pathlib import Path

from lowrank_jax.tables import load_note, markdown_table, prose, span

NAMES = {"softmax": "Transformer (softmax)", "linformer": "Linformer", "performer": "Performer"}
LAYERS = 4  # bench.lra_text_config: LRA's text model, one attention per layer
# run.py's LRA_SETTINGS rows as the tables name them (LRA's released text configs)
LRA_SETTINGS = {
    "linformer": "P = 32, keys and values share one projection",
    "performer": "the ReLU kernel on q and k themselves, no random features",
}


def _load(folder: Path) -> tuple[dict, dict]:
    results = json.loads((folder / "results" / "results.json").read_text())
    return results, json.loads((folder / "paper.json").read_text())


def _kind(model: str) -> tuple[str, str]:
    """``"linformer, FFN R=64"`` -> ("linformer", "Linformer, factorized FFN R = 64");
    ``"linformer, LRA's P=32 kv"`` -> ("linformer", "Linformer, LRA's text settings (...)")."""
    kind, _, rest = model.partition(", ")
    if rest.startswith("LRA's"):
        return kind, f"{NAMES[kind]}, LRA's text settings ({LRA_SETTINGS[kind]})"
    rank = rest.removeprefix("FFN R=")
    return kind, NAMES[kind] + (f", factorized FFN R = {rank}" if rest else "")


def lra_row(model: str) -> bool:
    return "LRA's" in model


def _row(results: dict, model: str, length: int) -> dict:
    return next(r for r in results["rows"] if r["model"] == model and r["length"] == length)


def side_by_side(folder: Path) -> str:
    """LRA's speed-up and memory ratio beside ours at the longest N both have."""
    results, paper = _load(folder)
    length = max(set(paper["lengths"]) & {r["length"] for r in results["rows"]})
    at = paper["lengths"].index(length)
    lra_memory = paper[f"memory_gb_at_{length}"]
    rows = []
    for model in dict.fromkeys(r["model"] for r in results["rows"]):
        kind, label = _kind(model)
        ours = _row(results, model, length)
        base = kind == "softmax" and model == kind
        if base:
            lra_speed = f"1.0× ({paper['steps_per_second'][kind][at]} steps/s)"
            lra_mem = f"1.0× ({lra_memory[kind]} GB)"
            speed = f"1.0× ({1 / ours['step_s']:.3f} steps/s)"
            memory = f"1.0× ({ours['bytes'] / 2**30:.1f} GiB)"
        else:  # LRA's figures only beside the rows with LRA's released settings
            same = lra_row(model)
            lra_speed = f"{paper['speedup'][kind][at]}×" if same else "—"
            lra_mem = f"{lra_memory[kind] / lra_memory['softmax']:.2f}×" if same else "—"
            speed, memory = f"{ours['speedup']:.1f}×", f"{ours['memory_ratio']:.2f}×"
        rows.append([label, lra_speed, speed, lra_mem, memory])
    header = [
        "model",
        "LRA speed-up (TPU v3, b = 32)",
        f"ours (CPU, b = {results['batch']})",
        "LRA memory",
        "ours memory",
    ]
    return f"At N = {length}:\n\n" + markdown_table(header, rows, "lrrrr")


def paper_table(folder: Path) -> str:
    """LRA's Table 2 as the README reads it: steps/s, speed-ups, memory at the longest N."""
    paper = json.loads((folder / "paper.json").read_text())
    rows = [
        [f"{NAMES[k]}: steps/s", *(f"{v}" for v in values)]
        for k, values in paper["steps_per_second"].items()
    ] + [
        [f"{NAMES[k]}: speed-up", *(f"{v}×" for v in values)]
        for k, values in paper["speedup"].items()
    ]
    length = paper["lengths"][-1]
    memory = ", ".join(f"{NAMES[k]} {gb} GB" for k, gb in paper[f"memory_gb_at_{length}"].items())
    header = ["LRA (TPU v3, b = 32)", *(f"N = {n}" for n in paper["lengths"])]
    return markdown_table(header, rows, "lrrrr") + f"\n\nMemory at N = {length}: {memory}."


def every_length(folder: Path) -> str:
    """Steps/s (speed-up to softmax), compiled memory (ratio to softmax) at every N."""
    results = json.loads((folder / "results" / "results.json").read_text())
    lengths = sorted({r["length"] for r in results["rows"]})
    rows = []
    for model in dict.fromkeys(r["model"] for r in results["rows"]):
        cells = []
        for length in lengths:
            row = _row(results, model, length)
            if "step_s" not in row:
                cells.append(row["status"])
                continue
            cells.append(
                f"{1 / row['step_s']:.3f}/s ({row['speedup']:.1f}×), "
                f"{row['bytes'] / 2**20:.0f} MiB ({row['memory_ratio']:.2f}×)"
            )
        rows.append([model, *cells])
    return markdown_table(["model", *(f"N = {n}" for n in lengths)], rows, "l" + "r" * len(lengths))


def sdpa(folder: Path) -> str:
    """Softmax attention alone, fwd + bwd: ours against PyTorch SDPA."""
    results = json.loads((folder / "results" / "results.json").read_text())
    rows = [
        [
            r["length"],
            f"{r['jax_s'] * 1e3:.0f}",
            f"{r['torch_sdpa_s'] * 1e3:.0f}",
            f"{r['jax_s'] / r['torch_sdpa_s']:.2f}",
        ]
        for r in results["attention"]
        if r["torch_sdpa_s"] is not None
    ]
    return markdown_table(["N", "ours (ms)", "PyTorch SDPA (ms)", "ours / SDPA"], rows, "rrrr")


def sdpa_ratios(folder: Path) -> list[float]:
    """Ours / SDPA at every N (the experiments table of the top-level README quotes them)."""
    results = json.loads((folder / "results" / "results.json").read_text())
    return [r["jax_s"] / r["torch_sdpa_s"] for r in results["attention"] if r["torch_sdpa_s"]]


def estimate(folder: Path) -> str:
    """What the longest N's speed-ups would be against an exact attention as fast as SDPA's."""
    results = json.loads((folder / "results" / "results.json").read_text())
    timed = [r for r in results["attention"] if r["torch_sdpa_s"]]
    last = max(timed, key=lambda r: r["length"])
    length = last["length"]
    step = _row(results, "softmax", length)["step_s"]
    ours, theirs = LAYERS * last["jax_s"], LAYERS * last["torch_sdpa_s"]
    faster = step - ours + theirs
    kinds = ["linformer", "performer"]
    now = [_row(results, k, length)["speedup"] for k in kinds]
    then = [faster / _row(results, k, length)["step_s"] for k in kinds]
    text = (
        f"Our exact attention as the model runs it (`implementation = auto`: the blocked, "
        f"flash-style kernel at these lengths on the CPU) takes "
        f"{span(sdpa_ratios(folder), '.1f')}× PyTorch's time. At N = {length} the "
        f"{LAYERS} layers' attention is ~{ours:.1f} s of the {step:.1f} s softmax step; with "
        f"SDPA's speed it would be ~{theirs:.1f} s, the step ~{faster:.1f} s, and the Linformer / "
        f"Performer speed-ups ~{then[0]:.1f}× / ~{then[1]:.1f}× instead of {now[0]:.1f}× / "
        f"{now[1]:.1f}× (an estimate from the two measured tables, not a measurement)."
    )
    return prose(text)


def hardware(folder: Path) -> str:
    """What the committed run was measured on, from results.json's machine record."""
    results = json.loads((folder / "results" / "results.json").read_text())
    machine = results["machine"]
    cores = f", {machine['cpus']} cores" if "cpus" in machine else ""
    memory = f", {machine['memory_gib']} GiB" if "memory_gib" in machine else ""
    seconds = results.get("seconds")
    took = f" The run took {seconds / 60:.0f} min." if seconds else ""
    text = (
        f"Hardware: the project's CPU machine ({machine['processor']}{cores}{memory}), JAX "
        f"{machine['jax']} on the {machine['backend'].upper()}, float32, **batch "
        f"{results['batch']}** (not LRA's 32: a softmax step at N = 4K takes seconds here, see "
        f"the tables below); {load_note(results.get('load'))}. Medians of "
        "the timed steps after a compiling warm-up. Files: `results/results.md`, "
        f"`results/results.json` (with the machine and versions), `results/speed_memory.png`.{took}"
    )
    return prose(text)


TABLES = {
    "hardware": hardware,
    "side_by_side": side_by_side,
    "paper": paper_table,
    "every_length": every_length,
    "sdpa": sdpa,
    "estimate": estimate,
}
