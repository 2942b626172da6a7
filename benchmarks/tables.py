"""Generated blocks of benchmarks/README.md, from the suite's results files: results/results.json
(the CPU's latest `make bench`), results/cpu-2026-11-26.json (an earlier `make bench` on a
machine of the same kind, kept to compare with), results/lora_step.json (that target group
alone, with DoRA) and results/h100.json (the suite's full shapes on a lent H100).

Every verdict here is computed from a results file: a row's pass / falls short is the
suite's (``common.target``, from the row's checks); a row whose figure rests on a PyTorch
peer that ran on another kind of device than ours is void; the load averages recorded
around a run say whether other work was running. h100.json's ``peer_device`` was added
after its run: the suite placed its peers on the CPU then, whatever the device.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from lowrank_jax.tables import load_note, markdown_table

# The mixers and peers of target 3's per-N rows (attention.py), in the table's order.
MIXERS = {
    "blocked": "blocked exact",
    "xla": "XLA exact",
    "sdpa": "PyTorch SDPA",
    "linformer": "Linformer P = 256",
    "performer": "Performer M = 256",
    "performer-pytorch": "performer-pytorch",
    "linformer-layer": "Linformer layer",
    "linformer-pytorch-layer": "`linformer` layer",
}
# Which of them are PyTorch peers, and the exact ones ("best exact" is the fastest of these).
PEERS = ("sdpa", "performer-pytorch", "linformer-pytorch-layer")
EXACT = ("blocked", "xla", "sdpa")

# Targets renumbered since a results file was written: the number its label carries -> the
# suite's number now, so older files pair row by row with new ones.
RENUMBERED = {"18": "9"}  # DoRA's step against LoRA's (lora_step.py)

# Where a device kind runs, as the machine line and the peers' placement name it.
PLACES = {"cpu": "CPU", "gpu": "GPU", "cuda": "GPU", "tpu": "TPU"}


def _results(folder: Path, name: str) -> dict:
    return json.loads((folder / "results" / f"{name}.json").read_text())


def label(target: str) -> str:
    """A row's target with the suite's current number (``RENUMBERED``).

    >>> label("18. MiniLM DoRA step"), label("5, 6. MiniLM steps")
    ('9. MiniLM DoRA step', '5, 6. MiniLM steps')
    """
    number, dot, rest = target.partition(". ")
    return f"{RENUMBERED.get(number, number)}{dot}{rest}"


def _exact_rows(results: dict) -> list[dict]:
    """Target 3's per-N times of every mixer and peer ([] where the run has no target 3)."""
    row = next((r for r in results["rows"] if label(r["target"]).startswith("3.")), None)
    return [] if row is None else row.get("rows", [])


def _seconds(value) -> float | None:
    return value["seconds"] if isinstance(value, dict) else value


def uses_peer(row: dict, results: dict) -> bool:
    """Whether the row's figure rests on a PyTorch peer's measured time.

    Rows written since the suite records it name their peer (``peer``, None for none).
    In older files: targets 3 and 6 where they have a verdict (a missing peer leaves
    none), and target 4 where SDPA was the fastest exact attention at the row's N.
    """
    if "peer" in row:
        return row["peer"] is not None
    number = label(row["target"]).split(".")[0]
    if number in ("3", "6"):
        return row["status"] != "—"
    if number == "4":
        n = int(re.search(r"N=(\d+)", row["target"]).group(1))
        for times in _exact_rows(results):
            exact = {k: _seconds(times.get(k)) for k in EXACT if times.get(k) is not None}
            if times["n"] == n and exact:
                return min(exact, key=exact.get) == "sdpa"
    return False


def status(row: dict, results: dict) -> str:
    """The row's verdict: the suite's, or void where its peer ran on another device kind."""
    machine = results["machine"]
    ours = PLACES.get(machine.get("backend"), machine.get("backend"))
    peers = PLACES.get(machine.get("peer_device"))
    if not uses_peer(row, results):
        return row["status"]
    if peers is None and ours != "CPU":
        return f"{row['status']} (the peer's device not recorded)"
    if peers is not None and peers != ours:
        return f"void: the peer ran on the {peers}, ours on the {ours}"
    return row["status"]


def load(results: dict) -> str:
    """The load averages recorded before and after the run, and what they say."""
    return load_note(results.get("load"))


def targets(folder: Path, name: str) -> str:
    """Every target's row as the suite wrote it, with the machine it ran on and its load."""
    results = _results(folder, name)
    rows = []
    for row in results["rows"]:
        measured = row["measured"]
        if row.get("xla_flops") and row.get("model_flops"):
            measured += f"; XLA's FLOP count {row['xla_flops'] / row['model_flops']:.3f}× ours"
        rows.append([label(row["target"]), measured, row["goal"], status(row, results)])
    machine = results["machine"]
    versions = ", ".join(
        f"{key} {machine[key]}"
        for key in ("device", "processor", "cpus", "jax", "flax", "torch")
        if key in machine
    )
    if "torch_threads" in machine:
        peers = machine.get("peer_device")
        where = "" if peers is None else f"peers on the {PLACES.get(peers, peers)}, "
        versions += f" ({where}{machine['torch_threads']} threads)"
    date = results.get("date", "date not recorded")
    return f"`results/{name}.json` ({date}): {versions}; {load(results)}.\n\n" + markdown_table(
        ["target", "measured", "goal", "status"], rows
    )


def _targets(numbers: list[str]) -> str:
    """``target 7`` or ``targets 1, 2 and 3``."""
    if len(numbers) == 1:
        return f"target {numbers[0]}"
    return f"targets {', '.join(numbers[:-1])} and {numbers[-1]}"


def shortfalls(folder: Path, name: str) -> str:
    """Which targets have a row that falls short, which pass, which have no verdict."""
    results = _results(folder, name)
    verdicts: dict[str, list[str]] = {}
    for row in results["rows"]:
        for number in label(row["target"]).split(".")[0].split(", "):
            verdicts.setdefault(number, []).append(status(row, results))
    groups = {
        "a row falls short in": [n for n, v in verdicts.items() if "falls short" in v],
        "every row with a goal passes in": [
            n for n, v in verdicts.items() if "falls short" not in v and "pass" in v
        ],
        "no verdict (reported only, not run or void) in": [
            n for n, v in verdicts.items() if "falls short" not in v and "pass" not in v
        ],
    }
    parts = [
        f"{what} {_targets(sorted(numbers, key=int))}"
        for what, numbers in groups.items()
        if numbers
    ]
    date = results.get("date", "date not recorded")
    return f"`results/{name}.json` ({date}): " + "; ".join(parts) + "."


def attention(folder: Path, name: str) -> str:
    """Target 3's per-N times (fwd + bwd, ms) of every mixer and peer."""
    results = _results(folder, name)
    exact = _exact_rows(results)
    present = [k for k in MIXERS if any(r.get(k) is not None for r in exact)]
    machine = results["machine"]
    peers = PLACES.get(machine.get("peer_device"))
    elsewhere = peers is not None and peers != PLACES.get(machine["backend"])

    def ms(value) -> str:
        if value is None:
            return "—"
        seconds = _seconds(value)
        return f"{seconds * 1e3:.0f}" if seconds >= 0.1 else f"{seconds * 1e3:.2f}"

    def title(key: str) -> str:
        return MIXERS[key] + (f" (on the {peers})" if key in PEERS and elsewhere else "")

    rows = [[r["n"], *(ms(r.get(k)) for k in present)] for r in exact]
    header = ["N", *(title(k) for k in present)]
    return markdown_table(header, rows, "r" * len(header))


def changes(folder: Path, before: str = "cpu-2026-11-26", after: str = "results") -> str:
    """An earlier ``make bench`` beside the latest, target by target, each named by its date."""
    old, new = _results(folder, before), _results(folder, after)
    paired = {label(row["target"]): row for row in old["rows"]}
    rows = []
    for row in new["rows"]:
        was = paired.get(label(row["target"]))
        rows.append(
            [
                label(row["target"]),
                "—" if was is None else f"{was['measured']} ({status(was, old)})",
                f"{row['measured']} ({status(row, new)})",
            ]
        )
    dates = [
        results.get("date", f"results/{name}.json")
        for name, results in ((before, old), (after, new))
    ]
    return markdown_table(["target", *dates], rows)


TABLES = {
    "cpu": lambda folder: targets(folder, "results"),
    "cpu_attention": lambda folder: attention(folder, "results"),
    "cpu_changes": changes,
    "cpu_short": lambda folder: shortfalls(folder, "results"),
    "lora_step": lambda folder: targets(folder, "lora_step"),
    "h100": lambda folder: targets(folder, "h100"),
    "h100_attention": lambda folder: attention(folder, "h100"),
}
