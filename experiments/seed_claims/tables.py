"""Generated blocks of experiments/seed_claims/README.md: two claims for low-rank layers, tested.

``regularisation``: results/regularisation/runs.csv (``lowrank-jax report``'s
per-run rows of the trec sweep), each factorized point against the dense
model by the 95% Welch interval of the difference of their means over seeds.
``latency``: results/latency.json (``latency.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from lowrank_jax.sweeps.stats import difference, interval
from lowrank_jax.tables import TablesError, load_note, markdown_table, prose, read_csv

# The two readings of "a low rank regularises" and the metric each is decided on:
# the final models' train - test gap (after every epoch: how much they overfit), and
# the test accuracy of each run's model selected on validation (how well it generalises).
CLAIMS = {
    "reduces overfitting": ("final_train_test_gap", -1),  # -1: supported when lower
    "improves generalisation": ("test_accuracy", +1),
}
METRIC_NAMES = {
    "final_train_test_gap": "the final model's train − test gap",
    "test_accuracy": "the selected model's test accuracy",
}


def _label(run: dict[str, str]) -> tuple[tuple, str]:
    if run["ffn_rank"]:
        return (1, int(run["ffn_rank"])), f"factorized FFN R = {run['ffn_rank']}"
    if run["qkv_rank"]:
        return (2, int(run["qkv_rank"])), f"factorized Q/K/V/out R = {run['qkv_rank']}"
    return (0, 0), "dense"


def grouped_runs(folder: Path) -> dict[str, list[dict[str, str]]]:
    """Finished runs grouped by point label, dense first, then FFN and Q/K/V ranks."""
    runs = [r for r in read_csv(folder / "results" / "regularisation" / "runs.csv")]
    runs = sorted((r for r in runs if r["status"] == "done"), key=lambda r: _label(r)[0])
    points: dict[str, list[dict[str, str]]] = {}
    for run in runs:
        points.setdefault(_label(run)[1], []).append(run)
    if "dense" not in points:
        raise TablesError("results/regularisation/runs.csv: no finished dense run")
    return points


def verdict(values: list[float], reference: list[float], sign: int) -> tuple[str, dict]:
    """supported / refuted / undecided: the difference's 95% interval beside 0.

    ``sign`` +1: the claim is that ``values`` are higher; -1: lower.

    Example:
      >>> verdict([0.80, 0.81, 0.79], [0.70, 0.71, 0.69], +1)[0]
      'supported'
      >>> verdict([0.80, 0.81, 0.79], [0.70, 0.71, 0.69], -1)[0]
      'refuted'
      >>> verdict([0.80, 0.60, 0.70], [0.70, 0.71, 0.69], +1)[0]
      'undecided'
    """
    diff = difference(values, reference)
    if diff["ci95"] is None:
        return "undecided", diff
    low, high = sign * diff["mean"] - diff["ci95"], sign * diff["mean"] + diff["ci95"]
    return ("supported" if low > 0 else "refuted" if high < 0 else "undecided"), diff


def _values(runs: list[dict[str, str]], metric: str) -> list[float]:
    return [float(r[metric]) for r in runs]


def _cell(runs: list[dict[str, str]], metric: str) -> str:
    stats = interval(_values(runs, metric))
    return f"{stats['mean']:.3f}" + (f" ± {stats['ci95']:.3f}" if stats["ci95"] else "")


def regularisation(folder: Path) -> str:
    """Per point: parameters, the selected and final models' accuracies and gaps, verdicts."""
    points = grouped_runs(folder)
    dense = points["dense"]
    rows = []
    for label, runs in points.items():
        verdicts = [
            "—" if label == "dense" else verdict(_values(runs, m), _values(dense, m), s)[0]
            for m, s in CLAIMS.values()
        ]
        rows.append(
            [
                label,
                f"{int(runs[0]['params_total']):,}",
                str(len(runs)),
                _cell(runs, "test_accuracy"),
                _cell(runs, "train_test_gap"),
                _cell(runs, "final_test_accuracy"),
                _cell(runs, "final_train_accuracy"),
                _cell(runs, "final_train_test_gap"),
                *verdicts,
            ]
        )
    header = [
        "model",
        "params",
        "seeds",
        "test acc. (selected)",
        "gap (selected)",
        "test acc. (final)",
        "train acc. (final)",
        "gap (final)",
        "reduces overfitting?",
        "improves generalisation?",
    ]
    return markdown_table(header, rows, "lrrrrrrrcc")


def regularisation_answer(folder: Path) -> str:
    """The README's answer: where each claim is supported, refuted or undecided."""
    points = grouped_runs(folder)
    dense = points.pop("dense")
    parts, overall = [], {}
    for claim, (metric, sign) in CLAIMS.items():
        found: dict[str, list[str]] = {}
        for label, runs in points.items():
            result, diff = verdict(_values(runs, metric), _values(dense, metric), sign)
            found.setdefault(result, []).append(
                f"{label} ({diff['mean']:+.3f} ± {diff['ci95']:.3f})"
                if diff["ci95"] is not None
                else f"{label} ({diff['mean']:+.3f}, one seed)"
            )
        summary = "; ".join(f"{result} at {', '.join(where)}" for result, where in found.items())
        parts.append(f"**{claim}** ({METRIC_NAMES[metric]}, minus dense's): {summary}.")
        overall[claim] = set(found)
    words = []
    for claim, results in overall.items():
        if results == {"supported"}:
            words.append(f'"{claim}" is supported at every rank tried')
        elif "supported" in results and "refuted" not in results:
            words.append(f'"{claim}" is supported at some ranks, undecided at the others')
        elif "supported" in results:
            words.append(f'"{claim}" is supported at some ranks and refuted at others')
        elif "refuted" in results and "undecided" not in results:
            words.append(f'"{claim}" is refuted at every rank tried')
        elif "refuted" in results:
            words.append(f'"{claim}" is refuted at some ranks, undecided at the others')
        else:
            words.append(f'"{claim}" is undecided at this scale')
    lines = [*parts, "**Verdict at this scale**: " + "; ".join(words) + "."]
    return "\n".join("- " + prose(line, 74).replace("\n", "\n  ") for line in lines)


PLAIN = "plain (LeCun-normal A, B)"


def _trick(name: str) -> tuple[int, str]:
    """A run's factorized initialisation, from its name, as (row order, label): plain,
    spectral, or spectral + Frobenius decay."""
    decay = re.search(r"frobenius_decay=([\d.e-]+)", name)
    if decay:
        return 2, f"spectral + Frobenius decay {float(decay[1]):g}"
    return (1, "spectral") if "init=spectral" in name else (0, PLAIN)


def _khodak(folder: Path) -> list[dict]:
    """Per Q/K/V rank that has a trick: each initialisation's runs and, past the plain
    one, its test accuracy's difference from plain's with the verdict
    (results/khodak/runs.csv: the trec sweep's runs, ``khodak`` points included)."""
    runs = [
        r for r in read_csv(folder / "results" / "khodak" / "runs.csv") if r["status"] == "done"
    ]
    groups: dict[tuple[int, tuple[int, str]], list[dict[str, str]]] = {}
    for run in runs:
        if run["qkv_rank"]:
            groups.setdefault((int(run["qkv_rank"]), _trick(run["name"])), []).append(run)
    ranks = sorted({rank for rank, trick in groups if trick[1] != PLAIN})
    records = []
    for rank in ranks:
        plain = _values(groups[rank, (0, PLAIN)], "test_accuracy")
        for trick in sorted(t for r, t in groups if r == rank):
            group = groups[rank, trick]
            result, diff = (
                (None, None)
                if trick[1] == PLAIN
                else verdict(_values(group, "test_accuracy"), plain, +1)
            )
            records.append(
                {"rank": rank, "trick": trick[1], "runs": group, "result": result, "diff": diff}
            )
    return records


def khodak(folder: Path) -> str:
    """Spectral initialisation and Frobenius decay against the plain one, per Q/K/V rank."""
    rows = [
        [
            f"Q/K/V/out R = {r['rank']}",
            r["trick"],
            str(len(r["runs"])),
            _cell(r["runs"], "test_accuracy"),
            _cell(r["runs"], "final_train_accuracy"),
            _cell(r["runs"], "final_train_test_gap"),
            "—"
            if r["result"] is None
            else f"{r['diff']['mean']:+.3f} ± {r['diff']['ci95']:.3f} ({r['result']})",
        ]
        for r in _khodak(folder)
    ]
    header = [
        "model",
        "initialisation",
        "seeds",
        "test acc. (selected)",
        "train acc. (final)",
        "gap (final)",
        "test acc. minus plain's (Welch 95%)",
    ]
    return markdown_table(header, rows, "llrrrrr")


def khodak_answer(folder: Path) -> str:
    """Each trick's verdict against the plain initialisation, rank by rank."""
    records = _khodak(folder)
    compared = [r for r in records if r["result"] is not None]
    seeds = min(len(r["runs"]) for r in records)
    verdicts: dict[str, list[str]] = {}
    for r in compared:
        verdicts.setdefault(r["trick"], []).append(f"{r['rank']}: {r['result']}")
    parts = [f"{trick} — {', '.join(found)}" for trick, found in verdicts.items()]
    decided = any(r["result"] != "undecided" for r in compared)
    above = all(r["diff"]["mean"] > 0 for r in compared)
    sides = "every mean is above" if above else "the means fall on both sides of"
    text = (
        "Test accuracy against the plain initialisation, by rank (R: verdict of the Welch "
        "95% interval): "
        + "; ".join(parts)
        + ". "
        + (
            f"Some differences are decided at {seeds} seeds (the table)."
            if decided
            else f"No difference is decided at {seeds} seeds: the intervals contain 0, and "
            f"{sides} the plain initialisation's; more seeds would be needed to call it."
        )
    )
    return prose(text)


def latency(folder: Path) -> str:
    """Forward time per example against R, as a ratio to the dense model's, per batch."""
    record = json.loads((folder / "results" / "latency.json").read_text())
    ranks = [str(r) for r in record["ranks"]]
    flop = record["flop_break_even"]
    header = ["batch", "dense (ms / example)", *(f"R = {r}" for r in ranks), "break-even R"]
    rows = []
    for row in record["rows"]:
        measured = row["measured_break_even"]
        rows.append(
            [
                str(row["batch"]),
                f"{row['dense_s_per_example'] * 1e3:.2f}",
                *(f"{row['ratio_to_dense'][r]:.2f}×" for r in ranks),
                "none measured" if measured is None else f"{measured:.0f}",
            ]
        )
    model = record["model"]
    note = (
        f"Time per example as a ratio to the dense model's ({model['layers']} layers, width "
        f"{model['dim']}, FFN {model['ffn']}, N = {model['length']}; medians over "
        f"{record['rounds']} round-robin rounds of {record['repeats']} calls). The FLOP "
        f"break-even rank is D F / (D + F) = {flop:.0f}: below it a factor pair has fewer "
        "weights and multiply-adds than the dense matrix. The measured break-even is where "
        "the ratio first reaches 1 (interpolated between neighbouring ranks); "
        f"{load_note(record.get('load'))}."
    )
    return markdown_table(header, rows, "r" * len(header)) + "\n\n" + prose(note, 76)


def latency_answer(folder: Path) -> str:
    """The README's answer: below which rank a factorized FFN is faster, per batch."""
    record = json.loads((folder / "results" / "latency.json").read_text())
    rows, low = record["rows"], str(record["ranks"][0])
    crossings = [row["measured_break_even"] for row in rows]
    batches = " / ".join(str(row["batch"]) for row in rows)
    if any(c is None for c in crossings):
        where = "does not cross the dense model's time at every batch in the ranks measured"
    else:
        where = (
            f"is faster than the dense one below R ≈ {' / '.join(f'{c:.0f}' for c in crossings)} "
            f"(measured) at batch {batches}, against the FLOP break-even "
            f"{record['flop_break_even']:.0f}"
        )
    lowest = " / ".join(f"{row['ratio_to_dense'][low]:.2f}×" for row in rows)
    faster = all(row["ratio_to_dense"][low] < 1 for row in rows)
    if not faster:
        verdict = "Not supported on this CPU: even the lowest rank is not faster."
    elif any(c is None for c in crossings):
        verdict = "Supported on this CPU at every rank measured at some batch."
    else:
        verdict = "Supported on this CPU, below a measured break-even rank."
    gap = ""
    if all(c is not None and c < record["flop_break_even"] for c in crossings):
        gap = (
            "; between the two it does fewer multiply-adds yet runs slower (two matmuls and "
            "an [N, R] intermediate instead of one matmul)"
        )
    text = (
        f"**{verdict}** A factorized FFN {where}{gap}. At R = {low} the whole forward pass "
        f"takes {lowest} of the dense model's time per example: only the FFN is factorized, "
        "so attention, embeddings and norms bound the saving. On another device the "
        "break-even differs: rerun `latency.py` there."
    )
    return prose(text, 76)


def verdicts(folder: Path) -> dict[str, dict[str, str]]:
    """Per claim, per factorized point: supported / refuted / undecided."""
    points = grouped_runs(folder)
    dense = points.pop("dense")
    return {
        claim: {
            label: verdict(_values(runs, metric), _values(dense, metric), sign)[0]
            for label, runs in points.items()
        }
        for claim, (metric, sign) in CLAIMS.items()
    }


TABLES = {
    "regularisation": regularisation,
    "regularisation_answer": regularisation_answer,
    "latency": latency,
    "latency_answer": latency_answer,
    "khodak": khodak,
    "khodak_answer": khodak_answer,
}
