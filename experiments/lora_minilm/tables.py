"""Generated blocks of experiments/lora_minilm/README.md, from results/table.json and paper.json."""

from __future__ import annotations

import json
from pathlib import Path

from lowrank_jax.sweeps.stats import equivalence, equivalence_text, interval
from lowrank_jax.tables import load_note, markdown_table, prose, stderr

FULL = "full fine-tuning"


def accuracies(run: dict) -> list[float]:
    """A row's test accuracy per seed (``run.py``'s ``test_accuracies``; a results file
    of one seed per method keeps one ``accuracy``)."""
    return run["test_accuracies"] if "test_accuracies" in run else [run["accuracy"]]


def _examples(run: dict) -> int:
    return run["test_examples"] if "test_examples" in run else run["eval_examples"]


def _accuracy_cell(run: dict | None) -> str:
    """Mean ± the 95% interval over seeds, or ± one binomial standard error for one seed."""
    if run is None:
        return "—"
    values = accuracies(run)
    if None in values:
        return "—"
    stats = interval(values)
    if stats["ci95"] is None:
        return f"{stats['mean']:.3f} ± {stderr(stats['mean'], _examples(run)):.3f} (n = 1)"
    return f"{stats['mean']:.3f} ± {stats['ci95']:.3f} (n = {stats['n']})"


def ours_table(sweeps: dict[str, dict[str, dict]]) -> str:
    """One row per method: trainable parameters, test accuracy per task, step time,
    optimizer state; the step time and the per-method columns are the first task's (the
    tasks differ only in the head)."""
    tasks = list(sweeps)
    first = sweeps[tasks[0]]
    full = first.get(FULL)  # a sweep of some rows only has no ratios to full
    rows = []
    for label in sorted(first, key=lambda label: first[label]["order"]):
        run = first[label]
        state = run["optimizer_state_bytes"]
        rows.append(
            [
                label,
                f"{run['params_trainable']:,}",
                *(_accuracy_cell(sweeps[task].get(label)) for task in tasks),
                f"{run['step_time_s'] * 1e3:.0f}",
                f"{run['step_time_s'] / full['step_time_s']:.2f}×" if full else "—",
                f"{state / 2**20:.2f} MiB",
                f"{state / full['optimizer_state_bytes']:.2%}" if full else "—",
            ]
        )
    header = [
        "method",
        "trainable params",
        *(f"{t} accuracy" for t in tasks),
        f"step ms ({tasks[0]})",
        "step vs full",
        "optimizer state",
        "state vs full",
    ]
    return markdown_table(header, rows, "l" + "r" * (len(header) - 1))


def ours(folder: Path) -> str:
    """``ours_table`` of results/table.json, with what its accuracies count."""
    sweeps = json.loads((folder / "results" / "table.json").read_text())
    tasks = list(sweeps)
    full = sweeps[tasks[0]][FULL]
    heads = ", ".join(
        f"{task}'s head adds {sweeps[task][FULL]['params_trainable'] - full['params_trainable']:,}"
        for task in tasks[1:]
    )
    counts = " and ".join(f"{_examples(sweeps[t][FULL]):,} {t}" for t in tasks)
    n = sorted({len(accuracies(r)) for rows in sweeps.values() for r in rows.values()})
    spread = (
        "± one binomial standard error (one seed per method)"
        if n == [1]
        else "mean ± the half-width of the 95% interval over seeds (Student t)"
    )
    caption = (
        f"`results/table.json` (trainable parameters, step time and optimizer state with the "
        f"{tasks[0]} head; {heads}); test accuracy over {counts} test examples, {spread}:"
    )
    return prose(caption) + "\n\n" + ours_table(sweeps)


def against_full(sweeps: dict[str, dict[str, dict]], margin: float) -> dict[str, dict]:
    """{method: {task: ``stats.equivalence`` of its test accuracy against full
    fine-tuning's, over seeds}} for every method but full."""
    return {
        label: {
            task: equivalence(
                interval(accuracies(rows[label])), interval(accuracies(rows[FULL])), margin
            )
            for task, rows in sweeps.items()
            if label in rows
        }
        for label in next(iter(sweeps.values()))
        if label != FULL
    }


def ours_answer(folder: Path) -> str:
    """Each method against full fine-tuning per task, with the equivalence margin."""
    sweeps = json.loads((folder / "results" / "table.json").read_text())
    margin = json.loads((folder / "paper.json").read_text())["equivalence_margin"]
    first = next(iter(sweeps.values()))
    lines = [
        f"- {label}: "
        + "; ".join(f"{task} {equivalence_text(r, margin)}" for task, r in verdicts.items())
        for label, verdicts in sorted(
            against_full(sweeps, margin).items(), key=lambda item: first[item[0]]["order"]
        )
    ]
    return (
        prose(
            "Each method's test accuracy against full fine-tuning's (Welch's 95% interval of "
            f"the difference over seeds; a match needs that interval inside ±{margin * 100:.1f} "
            "points, the equivalence margin in `paper.json`; one seed is never compared):"
        )
        + "\n\n"
        + "\n".join(lines)
    )


def paper(folder: Path) -> str:
    """The paper's RoBERTa-base rows, as printed in its Table 2 (``paper.json``)."""

    def cell(value: list) -> str:
        mean, std = value
        return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"

    rows = [
        [r["method"], f"{r['params_millions']:.1f}M", cell(r["sst2"]), cell(r["mnli"])]
        for r in json.loads((folder / "paper.json").read_text())["rows"]
    ]
    return markdown_table(["method", "trainable params", "SST-2", "MNLI"], rows, "lrrr")


PEER_LABELS = {
    "full": "full fine-tuning",
    "lora_qv_alpha8": "LoRA R = 8, W_q W_v, alpha 8",
    "lora_qv_alpha16": "LoRA R = 8, W_q W_v, alpha 16",
    "lora_all_alpha16": "LoRA R = 8, every linear layer, alpha 16",
}


def _accuracy(side: dict) -> str:
    stats = side["test_accuracy"]
    if stats is None:
        return "—"
    if stats["ci95"] is None:
        return f"{stats['mean']:.3f} (n = 1)"
    return f"{stats['mean']:.3f} ± {stats['ci95']:.3f} (n = {stats['n']})"


def _against(ours: dict, peft: dict) -> str:
    """Ours beside peft's 95% interval: above, within or below it."""
    if ours["test_accuracy"] is None or peft["test_accuracy"] is None:
        return "—"
    mine, theirs = ours["test_accuracy"]["mean"], peft["test_accuracy"]
    half = theirs["ci95"] or 0.0
    if mine > theirs["mean"] + half:
        return "above"
    return "within" if mine >= theirs["mean"] - half else "below"


def peer_table(folder: Path, task: str) -> str:
    """Ours and transformers + peft per method, from results/peer_<task>.json."""
    record = json.loads((folder / "results" / f"peer_{task}.json").read_text())
    rows = []
    for method, row in record["methods"].items():
        ours, peft, steps = row["ours"], row["peft"], row["step_s"]
        epochs = "/".join(
            ",".join(str(e) for e in side["best_epochs"]) or "—" for side in (ours, peft)
        )
        times = ["—"] * 4
        if steps:
            # ours as it trained: in length buckets where the timing has them
            mine = steps["ours_buckets_s"] if "ours_buckets_s" in steps else steps["ours_s"]
            times = [
                f"{mine * 1e3:.0f}",
                f"{steps['peft_dynamic_s'] * 1e3:.0f}",
                f"{steps['peft_fixed_s'] * 1e3:.0f}",
                f"{mine / steps['peft_dynamic_s']:.2f}×",
            ]
        counts = dict.fromkeys(
            f"{n:,}" for n in (ours["params_trainable"], peft["params_trainable"]) if n
        )
        rows.append(
            [
                PEER_LABELS[method],
                " / ".join(counts) or "—",  # one figure when both sides agree
                _accuracy(ours),
                _accuracy(peft),
                _against(ours, peft),
                epochs,
                *times,
            ]
        )
    header = [
        "method",
        "trainable params",
        "ours: test acc.",
        "peft: test acc.",
        "ours vs peft's interval",
        "best epoch (ours / peft)",
        "ours ms/step",
        "peft ms/step",
        "peft at our N",
        "ours / peft",
    ]
    return markdown_table(header, rows, "lrrrcc" + "r" * 4)


def peer_verdicts(record: dict) -> dict[str, str]:
    """Ours against peft's 95% interval (above, within, below), per method of a
    ``results/peer_<task>.json`` record measured on both sides."""
    return {
        m: _against(r["ours"], r["peft"])
        for m, r in record["methods"].items()
        if r["ours"]["test_accuracy"] and r["peft"]["test_accuracy"]
    }


def peer_answer(folder: Path, task: str) -> str:
    """The reading of the peer table: ours against peft's interval, LoRA against full."""
    record = json.loads((folder / "results" / f"peer_{task}.json").read_text())
    verdicts = peer_verdicts(record)
    done = {m: record["methods"][m] for m in verdicts}
    kept = sum(v in ("within", "above") for v in verdicts.values())
    parts = [
        f"Ours is within or above peft's 95% interval on {kept} of the {len(done)} rows "
        f"measured on both sides"
        + (
            f" (below on {', '.join(PEER_LABELS[m] for m, v in verdicts.items() if v == 'below')})"
            if kept < len(done)
            else ""
        )
        + "."
    ]
    full = done.get("full")
    margin = json.loads((folder / "paper.json").read_text())["equivalence_margin"]
    for method in ("lora_qv_alpha8", "lora_qv_alpha16"):
        if full and method in done:
            found = [
                equivalence(
                    done[method][side]["test_accuracy"], full[side]["test_accuracy"], margin
                )
                for side in ("ours", "peft")
            ]
            parts.append(
                f"{PEER_LABELS[method]} against full fine-tuning: ours "
                f"{equivalence_text(found[0], margin)}, peft {equivalence_text(found[1], margin)}."
            )
    if full:
        picked = [", ".join(map(str, full[side]["best_epochs"])) for side in ("ours", "peft")]
        parts.append(
            f"Full fine-tuning's model selected on validation came from epoch {picked[0]} "
            f"(ours, one per seed) and {picked[1]} (peft) of {record['epochs']}."
        )
    return prose(" ".join(parts), 76)


def _ratio(timed: dict, mine: str, theirs: str) -> str:
    """``mine``'s median step over ``theirs``, with the range of the per-round ratios."""
    text = f"{timed[f'{mine}_s'] / timed[f'{theirs}_s']:.2f}×"
    if f"{mine}_rounds_s" not in timed:  # timed before rounds were kept
        return text
    pairs = zip(timed[f"{mine}_rounds_s"], timed[f"{theirs}_rounds_s"], strict=True)
    rounds = [a / b for a, b in pairs]
    return f"{text} ({min(rounds):.2f}–{max(rounds):.2f})"


def peer_steps(folder: Path, task: str) -> str:
    """Each side's training step on the same batches (``peer.py --time``), and padding's cost."""
    record = json.loads((folder / "results" / f"peer_{task}_steps.json").read_text())
    bucketed = all("ours_buckets_s" in t for t in record["methods"].values())
    rows, longest = [], set()
    for method, t in record["methods"].items():
        longest.add(t["mean_longest"])
        mine = [f"{t['ours_s'] * 1e3:.0f}"]
        if bucketed:
            mine.append(f"{t['ours_buckets_s'] * 1e3:.0f}")
        ratios = [_ratio(t, "ours_buckets", "peft_dynamic")] if bucketed else []
        rows.append(
            [
                PEER_LABELS[method],
                *mine,
                f"{t['peft_dynamic_s'] * 1e3:.0f}",
                f"{t['peft_fixed_s'] * 1e3:.0f}",
                *ratios,
                _ratio(t, "ours", "peft_dynamic"),
                _ratio(t, "ours", "peft_fixed"),
            ]
        )
    header = [
        "method",
        "ours ms/step (N = 64)",
        *["ours ms/step (buckets)"] * bucketed,
        "peft ms/step (dynamic)",
        "peft ms/step (N = 64)",
        *["ours (buckets) / peft (dynamic)"] * bucketed,
        "ours / peft (dynamic)",
        "ours / peft (N = 64)",
    ]
    (mean,) = longest
    note = (
        f"Median over {record['rounds']} rounds of {record['batches']} training batches of "
        f"{task} (batch 32), the same batches on both sides, {record['threads']} threads, "
        f"{load_note(record.get('load'))}. The peer's dynamic padding cuts each batch to its "
        f"longest sentence, {mean:.1f} word pieces on average here, against our fixed 64: the "
        '"N = 64" column is the peer padded as we pad, so the two ratio columns separate '
        "what padding costs from what the frameworks cost."
    )
    if all("ours_rounds_s" in t for t in record["methods"].values()):
        note += " In brackets: the lowest and the highest of the ratio's per-round values."
    if bucketed:
        buckets = {tuple(t["buckets"]): t["mean_bucket"] for t in record["methods"].values()}
        ((lengths, bucket),) = buckets.items()
        note += (
            f" Ours with length buckets {lengths} (`data.buckets`) cuts the same batches to "
            f"{bucket:.1f} on average, one compiled step per bucket."
        )
    methods = record["methods"]
    if "lora_all_alpha16" in methods and "full" in methods:
        every, full = (methods[m]["ours_s"] for m in ("lora_all_alpha16", "full"))
        theirs = methods["lora_all_alpha16"]["peft_fixed_s"] / methods["full"]["peft_fixed_s"]
        if every > full:
            note += (
                f" On our side LoRA on every linear layer is slower than full fine-tuning "
                f"({every / full:.2f}× its step; the peer's is {theirs:.2f}× at N = 64): "
                "a performance defect of ours (benchmarks/README.md, target 6)."
            )
    align = "l" + "r" * (len(header) - 1)
    return markdown_table(header, rows, align) + "\n\n" + prose(note, 76)


def peer_epoch(folder: Path, task: str) -> str:
    """One training epoch each side (``peer.py --epoch``): ours in buckets, peft with its
    dynamic padding, and peft on our bucketed batches (the same shapes as ours)."""
    record = json.loads((folder / "results" / f"peer_{task}_epoch.json").read_text())
    rows = []
    for method, timed in record["methods"].items():
        ours, peft = timed["ours_buckets_total_s"], timed["peft_dynamic_total_s"]
        fine = timed["ours_fine_total_s"]  # ours in buckets every few word pieces
        same = timed["peft_buckets_total_s"]  # the peer on our bucketed batches
        rows.append(
            [
                PEER_LABELS[method],
                f"{ours:.1f}",
                f"{fine:.1f}",
                f"{peft:.1f}",
                f"{same:.1f}",
                f"{ours / peft:.2f}×",
                f"{fine / peft:.2f}×",
                f"{ours / same:.2f}×",
                "pass" if min(ours, fine) <= peft else "falls short",
            ]
        )
    first = next(iter(record["methods"].values()))
    step = first["fine_buckets"][0]
    header = [
        "method",
        "ours s (buckets)",
        f"ours s (every {step})",
        "peft s (dynamic)",
        "peft s (our buckets)",
        "ours / peft (dynamic)",
        f"ours every {step} / peft (dynamic)",
        "ours / peft (same shapes)",
        "goal ≤ 1.0× dynamic (our better)",
    ]
    return (
        markdown_table(header, rows, "lrrrrrrrl")
        + "\n\n"
        + prose(
            f"One epoch of {task}'s training split: {record['batches']} of its "
            f"{record['batches'] + 1} batches of 32 timed (the other warms each side up; "
            f"every bucket length is compiled before the timing), the same batches on both "
            f"sides, one after the other, {record['threads']} threads, "
            f"{load_note(record.get('load'))}; "
            f"one run (n = {record['rounds']}), so differences of a few percent are within "
            f"the machine's drift between runs. Batches average "
            f"{first['mean_longest']:.1f} word pieces at their longest (peft's padded "
            f"length) and {first['mean_bucket']:.1f} in our buckets "
            f"({', '.join(map(str, first['buckets']))}), {first['mean_fine_bucket']:.1f} in "
            f"buckets every {step} ({', '.join(map(str, first['fine_buckets']))}; one more "
            f"compiled step per bucket). The peer on our bucketed batches "
            f"separates the two costs: ours / peft (same shapes) is the frameworks', "
            f"peft (our buckets) / peft (dynamic) the coarser padding's.",
            76,
        )
    )


TABLES = {
    "ours": ours,
    "ours_answer": ours_answer,
    "paper": paper,
    "peer_steps_trec": lambda folder: peer_steps(folder, "trec"),
    "peer_trec": lambda folder: peer_table(folder, "trec"),
    "peer_answer_trec": lambda folder: peer_answer(folder, "trec"),
    "peer_epoch_trec": lambda folder: peer_epoch(folder, "trec"),
}
