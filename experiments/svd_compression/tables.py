"""Generated blocks of experiments/svd_compression/README.md, from results/ffn.json,
results/attention.json, results/fidelity.json (the earlier truncation-only run) and
paper.json (the reference measurement and the goal)."""

from __future__ import annotations

import json
from pathlib import Path

from lowrank_jax.data.text import TEST_SIZES
from lowrank_jax.sweeps.stats import goal_verdict, interval
from lowrank_jax.tables import count_of, markdown_table, prose, signed, stderr

METHODS = ("plain", "whitened", "recovered")
TASKS = ("trec", "reviews")


def _records(folder: Path, name: str) -> list[dict]:
    return json.loads((folder / "results" / f"{name}.json").read_text())


def _by(records: list[dict]) -> dict[tuple[int, str], dict]:
    return {(r["rank"], r["method"]): r for r in records if r["rank"] is not None}


def _cosine(record: dict | None) -> str:
    return "—" if record is None else f"{record['mean_cosine']:.3f} ({record['min_cosine']:.3f})"


def _fidelity(by: dict, kept: str, label: str, bold: int | None = None) -> str:
    rows = []
    for rank in sorted({rank for rank, _ in by}):
        first = next(by[rank, m] for m in METHODS if (rank, m) in by)
        row = [
            rank,
            f"{first[kept]:.2f}",
            f"{first['macs_kept']:.2f}",
            *(_cosine(by.get((rank, m))) for m in METHODS),
        ]
        if rank == bold:
            row = [f"**{c}**" if i in (0, 1, 5) and c != "—" else c for i, c in enumerate(row)]
        rows.append(row)
    header = [
        "R",
        f"{label} params kept",
        "model MACs/token kept",
        "plain SVD",
        "whitened SVD",
        "whitened + recovery",
    ]
    return markdown_table(header, rows, "rrrrrr")


def _half(by: dict, kept: str = "params_kept") -> int:
    """The rank whose parameters kept are nearest one half."""
    return min({rank for rank, _ in by}, key=lambda rank: abs(by[rank, "plain"][kept] - 0.5))


def ffn(folder: Path) -> str:
    """All six FFNs: this run's ranks (ffn.json) and the earlier run's other ranks."""
    run, earlier = _by(_records(folder, "ffn")), _by(_records(folder, "fidelity"))
    for record in earlier.values():
        record.setdefault("params_kept", record["ffn_params_kept"])
    merged = {**{k: v for k, v in earlier.items() if k[0] not in {r for r, _ in run}}, **run}
    shared = [k for k in earlier if k in run]
    gap = max(abs(earlier[k][f] - run[k][f]) for k in shared for f in ("mean_cosine", "min_cosine"))
    extra = sorted({r for r, _ in merged} - {r for r, _ in run})
    note = (
        f"Mean (min) cosine to the original embedding over the 200 held-out reviews (rows "
        f"{' and '.join(map(str, extra))} from the earlier truncation-only run, "
        f"`results/fidelity.json`; the others from this one, `results/ffn.json`; the truncation "
        f"figures of the ranks both runs have differ by at most {gap:.0e})."
    )
    table = _fidelity(merged, "params_kept", "FFN", bold=_half(run))
    return table + "\n\n" + prose(note)


def goal(folder: Path) -> str:
    """Ours beside the reference measurement at half the FFN parameters, and the goal."""
    paper = json.loads((folder / "paper.json").read_text())
    run = _by(_records(folder, "ffn"))
    earlier = _by(_records(folder, "fidelity"))
    rank, target = paper["rank"], paper["goal_mean_cosine"]
    at = {m: run[rank, m]["mean_cosine"] for m in METHODS}
    loss = run[rank, "recovered"]["distill_loss"]
    whitened = sorted(
        (r, v["mean_cosine"]) for (r, m), v in {**earlier, **run}.items() if m == "whitened"
    )
    above = next(((r, c) for r, c in whitened if c >= target), None)
    lifts = "; ".join(
        f"rank {r} from {run[r, 'whitened']['mean_cosine']:.3f} to "
        f"{run[r, 'recovered']['mean_cosine']:.3f}"
        for r in sorted({r for r, m in run if m == "recovered"})
    )
    text = (
        f"Beside the reference measurement (`paper.json`: all six FFNs at half their "
        f"parameters, rank {rank}): plain {paper['mean_cosine']['plain']:.2f}, whitened "
        f"{paper['mean_cosine']['whitened']:.2f} — ours {at['plain']:.3f} and "
        f"{at['whitened']:.3f}. The goal is a mean cosine of at least {target:.2f} at half the "
        f"FFN parameters; one short recovery run (n = 1, no interval: the seeds of the "
        f"recovery below answer it) lifts {lifts}. The distillation loss (mean 1 − cosine "
        f"per epoch) at R = {rank} went " + " → ".join(f"{v:.3f}" for v in loss) + "."
    )
    below = [p for p in whitened if above is not None and p[0] < above[0]]
    if below and at["recovered"] < target:
        (low, c0), (high, c1) = below[-1], above
        estimate = low + (target - c0) / (c1 - c0) * (high - low)
        text += (
            f" Truncation alone reaches {c1:.3f} at R = {high}; linear interpolation of the "
            f"whitened column puts {target:.2f} near rank {round(estimate, -1):.0f}."
        )
    return prose(text)


def _probes(records: list[dict]) -> str:
    by = _by(records)
    rows = [
        [rank, *(f"{by[rank, m][f'{t}_probe']:.3f}" for t in TASKS for m in METHODS)]
        for rank in sorted({rank for rank, _ in by})
    ]
    original = next(r for r in records if r["method"] == "original")
    header = ["R", *(f"{t}: {m}" if m == "plain" else m for t in TASKS for m in METHODS)]
    return (
        "Original MiniLM: "
        + ", ".join(f"**{t} {original[f'{t}_probe']:.3f}**" for t in TASKS)
        + ".\n\n"
        + markdown_table(header, rows, "r" * len(header))
    )


def _test_counts(folder: Path) -> dict[str, int]:
    """Per probe task, the test examples: the smallest count making every accuracy whole."""
    records = _records(folder, "ffn") + _records(folder, "attention")
    return {t: count_of(r[f"{t}_probe"] for r in records) for t in TASKS}


def probe_gaps(folder: Path) -> str:
    """Each FFN-compressed model's probe accuracy minus the original's, against the noise."""
    records, counts = _records(folder, "ffn"), _test_counts(folder)
    by, original = _by(records), next(r for r in records if r["method"] == "original")
    ranks = sorted({rank for rank, _ in by})
    errors = {t: stderr(original[f"{t}_probe"], counts[t]) for t in TASKS}
    rows = []
    for task in TASKS:
        cells = []
        for method in METHODS:
            gaps = [by[r, method][f"{task}_probe"] - original[f"{task}_probe"] for r in ranks]
            inside = sum(abs(g) <= errors[task] + 1e-9 for g in gaps)
            low, high = signed(min(gaps)), signed(max(gaps))
            cells.append(
                f"{low if low == high else f'{low} to {high}'} ({inside} of {len(gaps)} within)"
            )
        rows.append([f"{task} (±{errors[task]:.3f})", *cells])
    note = (
        f"Probe accuracy of the FFN-compressed models minus the original's, over "
        f"R = {', '.join(map(str, ranks))}, and how many lie within one binomial standard "
        f"error of the original (the ± beside each task: "
        + " and ".join(f"{counts[t]:,} {t} test examples" for t in TASKS)
        + ", the smallest counts that make every probe accuracy in `results/ffn.json` and "
        "`results/attention.json` a whole number):"
    )
    return prose(note) + "\n\n" + markdown_table(["probe", *METHODS], rows, "lrrr")


def probes(folder: Path) -> str:
    """Linear-probe accuracy of the FFN-compressed models (ffn.json)."""
    return _probes(_records(folder, "ffn"))


def attention(folder: Path) -> str:
    """The attention projections (Q, K, V, out of all six layers), attention.json."""
    return _fidelity(_by(_records(folder, "attention")), "params_kept", "attention")


def attention_probes(folder: Path) -> str:
    """Linear-probe accuracy of the attention-compressed models (attention.json)."""
    return _probes(_records(folder, "attention"))


def spectrum(folder: Path) -> str:
    """How far from low rank MiniLM's FFN weights are (``spectrum.py``'s results/spectrum.json)."""
    record = json.loads((folder / "results" / "spectrum.json").read_text())
    layers = record["layers"].values()
    ranks = [layer["rank_at_0.9"] for layer in layers]
    full = min(min(layer["shape"]) for layer in layers)
    high = sum(layer["rank_at_0.9"] > min(layer["shape"]) / 2 for layer in layers)
    reading = (
        "Real FFN weights are not low rank"
        if high == len(ranks)
        else f"{len(ranks) - high} of the {len(ranks)} FFN kernels are low rank"
    )
    rank = json.loads((folder / "paper.json").read_text())["rank"]
    at = {m: _by(_records(folder, "ffn"))[rank, m]["mean_cosine"] for m in ("plain", "whitened")}
    order = "above" if at["whitened"] > at["plain"] else "not above"
    text = (
        f"- {reading}: keeping 0.9 of a kernel's energy (its squared singular values) needs "
        f"rank {min(ranks)}–{max(ranks)} of {full} across the {len(ranks)} FFN kernels, more "
        f"than half the full rank in {high} of them (`results/spectrum.json`, by "
        f"`spectrum.py`). Whitening weighs the truncation by the FFNs' inputs instead: at "
        f"R = {rank} its mean cosine, {at['whitened']:.3f}, is {order} plain SVD's, "
        f"{at['plain']:.3f}."
    )
    return prose(text, 76).replace("\n", "\n  ")


BUDGET_METHODS = ("uniform plain", "uniform whitened", "greedy whitened")


def budget(folder: Path) -> str:
    """The same budgets spent three ways (``budget.py``'s results/budget.json)."""
    records = [r for r in _records(folder, "budget") if r["method"] != "original"]
    by = {(r["targets"], r["budget"], r["method"]): r for r in records}
    rows = []
    for targets, share in sorted({(r["targets"], r["budget"]) for r in records}, reverse=True):
        cells = [_cosine(by.get((targets, share, m))) for m in BUDGET_METHODS]
        greedy = by.get((targets, share, "greedy whitened"))
        spread = (
            "—"
            if greedy is None
            else "{}–{}".format(min(greedy["ranks"].values()), max(greedy["ranks"].values()))
        )
        kept = by[targets, share, "uniform plain"]["params_kept"]
        rows.append([targets, f"{share:.2f} ({kept:.3f})", *cells, spread])
    header = ["layers", "budget (kept)", *BUDGET_METHODS, "greedy's ranks"]
    return markdown_table(header, rows, "lrrrrr")


def budget_probes(folder: Path) -> str:
    """The linear probes of each budgeted model, beside the original's (results/budget.json)."""
    records = _records(folder, "budget")
    original = next(r for r in records if r["method"] == "original")
    rows = [
        ["original", "—", "—", *(f"{original[f'{t}_probe']:.3f}" for t in TASKS)],
        *(
            [
                r["targets"],
                f"{r['budget']:.2f}",
                r["method"],
                *(f"{r[f'{t}_probe']:.3f}" for t in TASKS),
            ]
            for r in sorted(records[1:], key=lambda r: (r["targets"] != "ffn", r["budget"]))
        ),
    ]
    return markdown_table(["layers", "budget", "method", *TASKS], rows, "llrrr")


def budget_answer(folder: Path) -> str:
    """Whether the greedy allocation beat one rank everywhere, from results/budget.json."""
    records = [r for r in _records(folder, "budget") if r["method"] != "original"]
    by = {(r["targets"], r["budget"], r["method"]): r for r in records}
    rows = [key[:2] for key in by if key[2] == "greedy whitened"]
    gaps = [
        by[(*k, "greedy whitened")]["mean_cosine"] - by[(*k, "uniform whitened")]["mean_cosine"]
        for k in rows
    ]
    whitening = [
        by[(*k, "uniform whitened")]["mean_cosine"] - by[(*k, "uniform plain")]["mean_cosine"]
        for k in rows
    ]
    starved = {}  # which kind of layer got the smallest greedy rank, per row
    for k in rows:
        ranks = by[(*k, "greedy whitened")]["ranks"]
        smallest = min(ranks, key=ranks.get)
        kind = smallest.split(".", 2)[2]
        starved[kind] = starved.get(kind, 0) + 1
    kinds = ", ".join(f"{kind} in {n}" for kind, n in sorted(starved.items(), key=lambda x: -x[1]))
    larger = sum(w > abs(g) for w, g in zip(whitening, gaps, strict=True))
    wins = sum(g > 0 for g in gaps)
    # greedy's total whitened error is the smallest by construction: where it loses on the
    # embedding, that total did not rank the allocations as the embedding does
    proxy = (
        f"at the {len(rows) - wins} budgets where it loses, that total is a poor proxy for "
        "the embedding"
        if 2 * wins < len(rows)
        else f"it ranks the allocations as the embedding does at {wins} of them"
    )
    matters = (
        "Whitening matters more than the allocation"
        if 2 * larger > len(rows)
        else "The allocation matters as much as whitening or more"
    )
    text = (
        f"Greedy whitened beats uniform whitened at {wins} of the "
        f"{len(rows)} budgets measured (mean cosine {signed(min(gaps))} to "
        f"{signed(max(gaps))} against it). Greedy gives the smallest total whitened "
        "truncation error, each layer's output error added up in that layer's own units; "
        f"{proxy}. The smallest greedy rank went to {kinds} of the {len(rows)} rows. "
        f"{matters}: uniform whitened over uniform plain is the larger gap in {larger} "
        f"of the {len(rows)} rows."
    )
    return prose(text)


def recovery(folder: Path) -> str:
    """Distillation until validation stops improving, per seed (results/recovery.json).

    A seed still running when the results were written (``running``) gets a row
    with its last epoch's held-out cosine, marked as such.
    """
    record = json.loads((folder / "results" / "recovery.json").read_text())
    seeds, original = record["seeds"], record["original"]
    rows = [
        [
            s["seed"],
            f"{s['params_kept']:.3f}",
            f"{s['mean_cosine_before']:.3f}",
            f"{s['mean_cosine']:.3f} ({s['min_cosine']:.3f})",
            f"{s['best_epoch']} of {len(s['history']) - 1}",
            *(f"{s[f'{t}_probe']:.3f}" for t in TASKS),
        ]
        for s in seeds
    ]
    if seeds:
        cosine = interval([s["mean_cosine"] for s in seeds])
        probes = (_plus_minus(interval([s[f"{t}_probe"] for s in seeds])) for t in TASKS)
        rows.append(["mean", "", "", _plus_minus(cosine), "", *probes])
    if "running" in record:
        history = record["running"]["history"]
        best = min(history, key=lambda epoch: epoch["val_loss"])["epoch"]
        last = history[-1]
        rows.append(
            [
                f"{record['running']['seed']} (unfinished)",
                "",
                f"{record['running']['mean_cosine_before']:.3f}",
                "—"
                if "held_out_cosine" not in history[best]
                else f"{history[best]['held_out_cosine']:.3f} at epoch {best}",
                f"{best} of {last['epoch']} so far",
                "",
                "",
            ]
        )
    rows.append(["original", "1", "1", "1", "", *(f"{original[f'{t}_probe']:.3f}" for t in TASKS)])
    header = ["seed", "FFN params kept", "cosine before", "after (min)", "best epoch", *TASKS]
    return markdown_table(header, rows, "rrrrrrr")


def _plus_minus(summary: dict) -> str:
    if summary["ci95"] is None:
        return f"{summary['mean']:.3f}"
    return f"{summary['mean']:.3f} ± {summary['ci95']:.3f}"


def recovery_answer(folder: Path) -> str:
    """The goal (mean cosine ≥ 0.95, probes within the original's interval), answered."""
    record = json.loads((folder / "results" / "recovery.json").read_text())
    paper = json.loads((folder / "paper.json").read_text())
    seeds, original, settings = record["seeds"], record["original"], record["settings"]
    target = paper["goal_mean_cosine"]
    text = (
        f"With {settings['distill']:,} distillation reviews, validation on {settings['val']} "
        f"others and patience {settings['patience']} (at most {settings['max_epochs']} "
        f"epochs), "
    )
    running = ""
    if "running" in record:
        history = record["running"]["history"]
        last, best = history[-1]["epoch"], min(history, key=lambda e: e["val_loss"])
        cosine = best.get("held_out_cosine")
        running = (
            f"Seed {record['running']['seed']} had not finished when the results were "
            f"written: after epoch {last}, its best epoch on validation is {best['epoch']}"
            + ("" if cosine is None else f", with a held-out mean cosine of {cosine:.3f}")
            + (", its validation loss still falling. " if best["epoch"] == last else ". ")
        )
    if not seeds:
        return prose(
            text + "no seed has finished yet, so the goal of "
            f"{target:.2f} is **not yet answered** (the probes are measured when a seed "
            f"finishes). " + running
        )
    cosine = interval([s["mean_cosine"] for s in seeds])
    # each probe scores the first `probe` sentences of its task's test split, or all of them
    counts = {task: min(settings["probe"], TEST_SIZES[task]) for task in TASKS}
    probe_text = []
    for task in TASKS:
        mean = interval([s[f"{task}_probe"] for s in seeds])["mean"]
        base = original[f"{task}_probe"]
        half = 1.96 * stderr(base, counts[task])
        verdict = "within" if abs(mean - base) <= half else "outside"
        probe_text.append(
            f"{task} {mean:.3f} against the original's {base:.3f} ± {half:.3f} over "
            f"{counts[task]:,} test examples ({verdict})"
        )
    text += (
        f"the mean cosine over {len(seeds)} of {settings['seeds']} seeds is "
        f"{_plus_minus(cosine)}: the goal "
        f"of {target:.2f} is **{recovery_verdict(record, target)}** (the 95% interval of the "
        f"mean against the goal). Probes (mean over seeds; the original's binomial 95% "
        f"interval): " + "; ".join(probe_text) + ". " + _capped(seeds, settings) + running
    )
    return prose(text.strip())


def recovery_verdict(record: dict, goal: float) -> str:
    """The recovery's goal over its finished seeds: ``stats.goal_verdict`` of their mean
    cosines (``"not yet answered"`` before a seed has finished)."""
    if not record["seeds"]:
        return "not yet answered"
    return goal_verdict([s["mean_cosine"] for s in record["seeds"]], goal)


def _capped(seeds: list[dict], settings: dict) -> str:
    """Whether the epoch cap, not the patience, ended the finished seeds, and how much
    their best validation loss still fell over their last 3 epochs."""
    last = settings["max_epochs"]
    capped = [
        s
        for s in seeds
        if len(s["history"]) - 1 == last and last - s["best_epoch"] < settings["patience"]
    ]
    if not capped:
        return "Every seed stopped on its patience, its validation loss no longer falling. "

    def best_until(history: list[dict], epoch: int) -> float:
        return min(h["val_loss"] for h in history[: epoch + 1])

    falls = [best_until(s["history"], last - 3) - best_until(s["history"], last) for s in capped]
    first = [s["history"][0]["val_loss"] - s["history"][1]["val_loss"] for s in capped]
    return (
        f"In {len(capped)} of {len(seeds)} seeds the cap of {last} epochs, not the patience, "
        f"ended the run: the best validation loss still fell, by at most {max(falls):.4f} "
        f"over the last 3 epochs (by at least {min(first):.4f} in the first). "
    )


TABLES = {
    "ffn": ffn,
    "goal": goal,
    "probes": probes,
    "probe_gaps": probe_gaps,
    "attention": attention,
    "attention_probes": attention_probes,
    "spectrum": spectrum,
    "budget": budget,
    "budget_answer": budget_answer,
    "budget_probes": budget_probes,
    "recovery": recovery,
    "recovery_answer": recovery_answer,
}
