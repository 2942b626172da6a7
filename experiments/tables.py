"""The experiments table of the top-level README.md, from each experiment's results.

Each row's figures are read from that experiment's committed files, through its own
``tables.py`` where it already computes them.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import ModuleType

from lowrank_jax.config import load_module
from lowrank_jax.sweeps.report import point_of
from lowrank_jax.sweeps.stats import interval, welch
from lowrank_jax.tables import markdown_rows, markdown_table, prose, read_csv, span


def _tables(folder: Path, name: str) -> ModuleType:
    return load_module(folder / name / "tables.py")


def _span(counts) -> str:
    """``3`` when every point has the same number of seeds, else ``2–3``."""
    counts = sorted(set(counts))
    return "–".join(map(str, {counts[0]: None, counts[-1]: None}))


def _json(path: Path):
    return json.loads(path.read_text())


def lora_params(folder: Path) -> str:
    paper = _json(folder / "lora_params" / "paper.json")["rows"]
    ours = markdown_rows(folder / "lora_params" / "results" / "params.md", "model")
    printed = {(r["model"], str(r["rank"])): r["trainable"] for r in paper}
    same = sum(f"{int(r[5].replace(',', '')) / 1e6:.1f}M" == printed[r[0], r[1]] for r in ours)
    return "exact match" if same == len(ours) else f"matches in {same} of {len(ours)} rows"


def performer_approximation(folder: Path) -> str:
    seeds = _json(folder / "performer_approximation" / "results" / "mse.json")["seeds"]
    return f"measured ({seeds} seeds); see its README for where it agrees and where not"


def lra_speed_memory(folder: Path) -> str:
    here = folder / "lra_speed_memory"
    results, paper = _json(here / "results" / "results.json"), _json(here / "paper.json")
    length = paper["lengths"][-1]
    module = _tables(folder, "lra_speed_memory")

    def at(model: str) -> dict:
        return next(r for r in results["rows"] if r["model"] == model and r["length"] == length)

    kinds = ("linformer", "performer")
    names = {r["model"] for r in results["rows"]}
    theirs = [at(next(m for m in names if m.startswith(k) and module.lra_row(m))) for k in kinds]
    ours = [at(kind)["speedup"] for kind in kinds]
    lra = [paper["speedup"][kind][-1] for kind in kinds]
    memory = paper[f"memory_gb_at_{length}"]
    lra_memory = [memory[kind] / memory["softmax"] for kind in kinds]
    ratio = module.sdpa_ratios(here)[-1]
    faster = " / ".join("faster" if t["speedup"] > 1 else "not faster" for t in theirs)
    return (
        f"measured on CPU (batch {results['batch']}), at {length // 1024}K with LRA's text "
        f"settings: Linformer / Performer {theirs[0]['speedup']:.1f}× / "
        f"{theirs[1]['speedup']:.1f}× the steps per second of exact attention ({faster}) at "
        f"{theirs[0]['memory_ratio']:.2f}× / "
        f"{theirs[1]['memory_ratio']:.2f}× the memory vs LRA's {lra[0]}× / {lra[1]}× at "
        f"{lra_memory[0]:.2f}× / {lra_memory[1]:.2f}× (ours, P = M = 256: {ours[0]:.1f}× / "
        f"{ours[1]:.1f}×), against our "
        f"exact attention as the model runs it (the blocked kernel, {ratio:.1f}× PyTorch "
        "SDPA's time there)"
    )


def linformer_efficiency(folder: Path) -> str:
    here = folder / "linformer_efficiency"
    paper = _json(here / "paper.json")
    ours = {
        (r["length"], r["proj_len"]): r for r in _json(here / "results" / "results.json")["rows"]
    }
    cells = {"time_saved": [0, 0], "memory_saved": [0, 0]}  # [ours larger, compared]
    for key, counts in cells.items():
        for length, values in paper[key].items():
            for proj, value in zip(paper["proj_lens"], values, strict=True):
                if (int(length), proj) in ours:
                    counts[0] += ours[int(length), proj][key] > value
                    counts[1] += 1
    (time_larger, n), (memory_larger, m) = cells["time_saved"], cells["memory_saved"]
    batches = {
        (r["length"], r["proj_len"]): r["memory_saved"]
        for r in _json(here / "results" / "results.json")["paper_memory"]["rows"]
    }
    ratios = [
        batches[int(length), proj] / value
        for length, values in paper["memory_saved"].items()
        for proj, value in zip(paper["proj_lens"], values, strict=True)
        if (int(length), proj) in batches
    ]
    return (
        f"measured on CPU; time saved larger than the paper's in {time_larger} of {n} cells, "
        f"memory saved (batch 1) smaller in {m - memory_larger} of {m}; the paper's way "
        f"(largest batch in 16 GiB) {span(ratios)} of the paper's (see README)"
    )


def listops(folder: Path) -> str:
    here = folder / "listops"
    module = _tables(folder, "listops")
    runs = read_csv(here / "results" / "results.csv")
    dense = {r["attention"]: float(r["eval_accuracy"]) for r in runs if not r["ffn_rank"]}
    accuracies = " / ".join(f"{dense[k]:.3f}" for k in ("softmax", "linformer", "performer"))
    lra = module.lra_runs(here)
    m2, m64 = lra[module.LRA_PERFORMER], lra[module.OUR_PERFORMER]
    printed = _json(here / "paper.json")["accuracy"]["performer"]
    return (
        f"full-spec config for an accelerator; CPU-scale run ({accuracies}), labelled as such; "
        f"with LRA's own Performer (M = 2) test accuracy {module.ci_text(m2, 'test_accuracy')} "
        f"against {module.ci_text(m64, 'test_accuracy')} at M = 64 ({m2['n']} seeds, CPU scale): "
        f"LRA's {printed:.2f}% is {module.lra_verdict(lra)}"
    )


def rank_sweep(folder: Path) -> str:
    module = _tables(folder, "rank_sweep")
    found = {
        name: module.overfits(module.sweep_runs(folder / "rank_sweep", dataset))
        for dataset, name in module.NAMES.items()
    }
    gaps = "; ".join(
        f"{name} {f['gap']:+.3f} (2 s.e. {f['error']:.3f})" for name, f in found.items()
    )
    if not any(f["overfits"] for f in found.values()):
        reading = (
            "no dense model overfits, so there is no gap for a low rank to shrink and the "
            "regularisation claim is tested in `experiments/seed_claims` instead"
        )
    else:
        over = ", ".join(name for name, f in found.items() if f["overfits"])
        reading = f"the dense model overfits on {over}: the gap against R is in its README"
    return f"CPU-scale runs; the dense model's train − eval gap: {gaps}: {reading}"


def seed_claims(folder: Path) -> str:
    here = folder / "seed_claims"
    module = _tables(folder, "seed_claims")
    found = module.verdicts(here)

    def where(claim: str, result: str) -> str:
        labels = [label for label, v in found[claim].items() if v == result]
        return ", ".join(labels) or "none of the ranks tried"

    latency = _json(here / "results" / "latency.json")
    crossings = " / ".join(
        "—" if r["measured_break_even"] is None else f"{r['measured_break_even']:.0f}"
        for r in latency["rows"]
    )
    batches = " / ".join(str(r["batch"]) for r in latency["rows"])
    seeds = sorted({len(runs) for runs in module.grouped_runs(here).values()})
    return (
        f"measured (CPU scale, {_span(seeds)} seeds, "
        f"Welch 95%): a smaller train − test gap at "
        f"{where('reduces overfitting', 'supported')}, a higher test accuracy at "
        f"{where('improves generalisation', 'supported')}, a lower one at "
        f"{where('improves generalisation', 'refuted')}; a factorized FFN forward is faster "
        f"than dense below R ≈ {crossings} (batch {batches}; FLOP break-even "
        f"{latency['flop_break_even']:.0f})"
    )


def svd_compression(folder: Path) -> str:
    here = folder / "svd_compression"
    paper = _json(here / "paper.json")
    at = {
        r["method"]: r["mean_cosine"]
        for r in _json(here / "results" / "ffn.json")
        if r["rank"] == paper["rank"]
    }
    goal = paper["goal_mean_cosine"]
    recovery = _json(here / "results" / "recovery.json")
    seeds, cap = recovery["seeds"], recovery["settings"]["max_epochs"]
    longer = (
        f", distilled for up to {cap} epochs, the best validation epoch kept, "
        f"{interval([s['mean_cosine'] for s in seeds])['mean']:.3f} (n = {len(seeds)} seeds)"
        if seeds
        else ""
    )
    reached = _tables(folder, "svd_compression").recovery_verdict(recovery, goal)
    return (
        f"measured: at half the FFN parameters plain {at['plain']:.3f}, whitened "
        f"{at['whitened']:.3f}, whitened + 2 short epochs of distillation "
        f"{at['recovered']:.3f}{longer} (goal {goal:.2f} on the mean over seeds: {reached}); "
        "linear-probe accuracy beside"
    )


def lora_minilm(folder: Path) -> str:
    here = folder / "lora_minilm"
    module = _tables(folder, "lora_minilm")
    table = _json(here / "results" / "table.json")
    margin = _json(here / "paper.json")["equivalence_margin"]
    first = next(iter(table.values()))
    full = first[module.FULL]
    found = module.against_full(table, margin)

    def rows(verdict: str) -> str:
        labels = sorted(
            (
                m
                for m, tasks in found.items()
                if all(r["verdict"] == verdict for r in tasks.values())
            ),
            key=lambda label: first[label]["order"],
        )
        return ", ".join(labels) or "none"

    n = sorted({len(module.accuracies(r)) for rows_ in table.values() for r in rows_.values()})
    if n == [1]:
        reading = "one seed per method, so no method is compared with full fine-tuning"
    else:
        reading = (
            f"{_span(n)} seeds; matching full fine-tuning on "
            f"every task within ±{margin * 100:.1f} points: {rows('matches')}; below it on "
            f"every task: {rows('lower')}"
        )
    record = _json(here / "results" / "peer_trec.json")
    peer = module.peer_verdicts(record)
    within = sum(verdict in ("within", "above") for verdict in peer.values())
    seeds = sorted(
        {
            side["test_accuracy"]["n"]
            for row in record["methods"].values()
            for side in (row["ours"], row["peft"])
            if side["test_accuracy"]
        }
    )
    shares = " / ".join(
        f"{first[label]['optimizer_state_bytes'] / full['optimizer_state_bytes']:.1%}"
        for label in ("LoRA R=64 (W_q, W_v)", "LoRA R=8 (all linear)")
    )
    return (
        f"CPU scale ({full['steps']} steps; {reading}); LoRA R = 64 on W_q, W_v and R = 8 on "
        f"all linear layers keep {shares} of full's optimizer state; the paper's RoBERTa-base "
        f"rows beside. Beside transformers + peft on trec ({record['epochs']} epochs, "
        f"{_span(seeds)} seeds a side): ours within or above peft's 95% interval "
        f"on {within} of {len(peer)} rows"
    )


def lora_subspace(folder: Path) -> str:
    here = folder / "lora_subspace"
    module = _tables(folder, "lora_subspace")
    results = _json(here / "results" / "phi.json")
    tops = [module.top_phi(r, p) for r in results.values() for p in module.PROJECTIONS]
    upper = [t[i] for t in tops for i in module.UPPER]
    lower = [t[i] for t in tops for i in module.LOWER]
    return (
        f"measured: the top direction of A_8 lies largely in A_64's span in the upper layers "
        f"(φ(1, 64) {span(upper)}), less so in the lower ones ({span(lower)}; chance level "
        f"{module.chance(1, 64):.2f}); how far A moved beside"
    )


def linformer_spectrum(folder: Path) -> str:
    spectrum = _json(folder / "linformer_spectrum" / "results" / "spectrum.json")
    return f"measured at N = {spectrum['length']}"


ROWS = [
    (
        "lora_params",
        "LoRA paper Tables 2 and 4: trainable parameters of LoRA on W_q, W_v "
        "(RoBERTa-base/large R = 8, GPT-3 175B R = 1, 8), by surgery on abstract models",
        lora_params,
    ),
    (
        "performer_approximation",
        "Performer Fig. 4: attention-output MSE against M, positive vs "
        "trigonometric, orthogonal vs iid, error bars over seeds",
        performer_approximation,
    ),
    (
        "lra_speed_memory",
        "LRA Table 2: training steps/s and memory of softmax, Linformer, "
        "Performer (and factorized-FFN variants) at N = 1K–4K; exact attention timed against "
        "PyTorch SDPA",
        lra_speed_memory,
    ),
    (
        "linformer_efficiency",
        "Linformer Table 3: inference time and memory saved against N and P",
        linformer_efficiency,
    ),
    (
        "listops",
        "LRA Table 1, ListOps column: Transformer, Linformer, Performer, factorized FFN",
        listops,
    ),
    (
        "rank_sweep",
        "accuracy, step time and the train/eval gap against rank R (FFN and Q/K/V) on "
        "ListOps and sequential Fashion-MNIST",
        rank_sweep,
    ),
    (
        "seed_claims",
        "two claims for low-rank layers: a low rank regularises (the train − test gap and test "
        "accuracy against R, FFN and Q/K/V, where the dense model overfits) and gives lower "
        "inference latency (forward time per example against R)",
        seed_claims,
    ),
    (
        "svd_compression",
        "MiniLM's FFNs (or attention projections) by plain vs activation-aware "
        "(whitened) SVD, then a short distillation: embedding fidelity and linear-probe accuracy "
        "against parameters",
        svd_compression,
    ),
    (
        "lora_minilm",
        "LoRA paper Table 2 on MiniLM: full fine-tuning, LoRA R = 1–64 on W_q, W_v and "
        "on all linear layers, adapters; trainable parameters, accuracy on reviews and trec, step "
        "time, optimizer state",
        lora_minilm,
    ),
    (
        "lora_subspace",
        "LoRA paper Fig. 3: subspace similarity φ(A_8, A_64, i, j) of the learned ΔW_q, ΔW_v",
        lora_subspace,
    ),
    (
        "linformer_spectrum",
        "Linformer Fig. 1 on MiniLM and real text: attention spectra per layer and head",
        linformer_spectrum,
    ),
]


def experiments(folder: Path) -> str:
    """One row per experiment: its folder, what it reproduces, its status with its figures."""
    rows = [[f"`experiments/{name}`", what, status(folder)] for name, what, status in ROWS]
    return markdown_table(["folder", "reproduces", "status"], rows)


def _summary(row: dict, metric: str) -> dict:
    """A results.csv row's ``stats.interval`` summary of one metric (mean, std, n)."""
    std = row[f"{metric}_std"]
    return {"mean": float(row[metric]), "std": float(std) if std else None, "n": int(row["n"])}


def rank_difference(low: dict, high: dict) -> str:
    """How the test accuracy of rank ``high`` differs from rank ``low`` (results.csv rows):
    Welch's 95% interval of the difference of the means decides.

    Example:
      >>> a = {"lora_rank": "1", "n": "3", "test_accuracy": "0.80", "test_accuracy_std": "0.01"}
      >>> b = {**a, "lora_rank": "32", "test_accuracy": "0.90"}
      >>> rank_difference(a, b)
      'R = 32 scores 10.0 points above R = 1 (95% interval of the difference +7.7 to +12.3 points)'
    """
    diff = welch(_summary(high, "test_accuracy"), _summary(low, "test_accuracy"))
    pair = f"R = {high['lora_rank']}", f"R = {low['lora_rank']}"
    if diff["ci95"] is None:
        return f"{pair[0]} against {pair[1]}: not compared (n = 1)"
    ends = (diff["mean"] - diff["ci95"]) * 100, (diff["mean"] + diff["ci95"]) * 100
    span = f"95% interval of the difference {ends[0]:+.1f} to {ends[1]:+.1f} points"
    if ends[0] <= 0 <= ends[1]:
        return f"no difference detected between {pair[0]} and {pair[1]} ({span})"
    side = "above" if diff["mean"] > 0 else "below"
    return f"{pair[0]} scores {abs(diff['mean']) * 100:.1f} points {side} {pair[1]} ({span})"


def convergence_reading(rows: list[dict], runs: list[dict]) -> str:
    """Whether every point's runs kept a best before their last evaluation (report's rule)."""
    flagged = [r for r in rows if r["still_improving"] == "True"]
    if flagged:
        return " ".join(
            f"R = {r['lora_rank']}: {r['best_at_last_eval']} runs were still improving at "
            "their last evaluation; its accuracy is a lower bound, not a converged value."
            for r in flagged
        )
    last = {r["last_eval_step"] for r in runs}
    steps = "; ".join(
        f"R = {row['lora_rank']}: "
        + ", ".join(r["best_step"] for r in runs if point_of(r["name"]) == row["name"])
        for row in rows
    )
    return (
        "Every point converged by the report's rule: most of its runs kept an earlier "
        f"evaluation than their last (step {'/'.join(sorted(last))}) as their best "
        f"(best steps {steps})."
    )


def demo(folder: Path) -> str:
    """``make demo``'s table (committed from its run), its convergence and whether, and by
    how much, the ranks differ."""
    results = folder / "demo" / "results"
    rows = sorted(read_csv(results / "results.csv"), key=lambda r: int(r["lora_rank"]))
    runs = read_csv(results / "runs.csv")

    def cell(row, metric):
        mean, half = float(row[metric]), row[f"{metric}_ci95"]
        return f"{mean:.3f} ± {float(half):.3f}" if half else f"{mean:.3f}"

    table = markdown_table(
        ["LoRA rank R", "trainable params", "seeds", "test accuracy", "validation", "train"],
        [
            [
                row["lora_rank"],
                f"{int(row['params_trainable']):,}",
                row["n"],
                cell(row, "test_accuracy"),
                cell(row, "val_accuracy"),
                cell(row, "train_accuracy"),
            ]
            for row in rows
        ],
        align="rrrrrr",
    )
    pairs = [(rows[0], rows[-1])] + (list(itertools.pairwise(rows)) if len(rows) > 2 else [])
    differences = "; ".join(rank_difference(a, b) for a, b in pairs)
    return (
        table
        + "\n\n"
        + prose(
            "Mean ± half-width of the 95% interval (Student t) over the seeds. "
            + convergence_reading(rows, runs)
            + f" Test accuracy: {differences}."
        )
    )


TABLES = {"experiments": experiments, "demo": demo}
