"""What every benchmark shares: the target rows, their verdicts, the report."""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import operator
import os
from pathlib import Path

from lowrank_jax import bench

PASS, SHORT, INFO = "pass", "falls short", "—"


OPS = {"<=": operator.le, ">=": operator.ge, "==": operator.eq}


def target(
    name: str, measured: str, goal: str, checks: list | None, *, peer: str | None = None, **data
) -> dict:
    """One row of the report: what was measured against which goal, and the verdict.

    ``checks``: the goal as ``(quantity, value, op, bound)`` tuples, op one of
    ``OPS``; the row passes when every one holds, and keeps them (the verdict can
    be recomputed from the row). None: reported only (no goal, or the comparison
    could not run here). ``peer``: the PyTorch peer whose time the figure rests
    on, None where none does (the tables void such a row when the peer ran on
    another kind of device than ours: ``machine["peer_device"]``).
    """
    if checks is None:
        status = INFO
    else:
        status = PASS if all(OPS[op](value, bound) for _, value, op, bound in checks) else SHORT
    return {
        "target": name,
        "measured": measured,
        "goal": goal,
        "status": status,
        "checks": checks,
        "peer": peer,
        **data,
    }


def torch_or_none():
    """``torch`` when importable (the optional peers), else None."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch


def torch_device(torch) -> str:
    """Where the PyTorch peer runs: the GPU when JAX also runs on one, else the CPU."""
    import jax

    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def torch_seconds(torch, run, repeats: int) -> float:
    """Median seconds of ``run()`` (PyTorch work), waiting for the GPU where it runs there."""

    def call():
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    return bench.median_seconds(call, repeats)


def markdown(rows: list[dict]) -> str:
    lines = ["| target | measured | goal | status |", "|---|---|---|---|"]
    lines += [f"| {r['target']} | {r['measured']} | {r['goal']} | {r['status']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(targets, title: str, doc: str, argv: list[str] | None = None) -> list[dict]:
    """A benchmark module's command line: ``--quick``, ``--out``; prints and writes its rows."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes: checks that it works")
    parser.add_argument("--out", help="write results.json / results.md here")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    rows = targets(args.quick)
    report(rows, args.out, title, load_before)
    return rows


def report(
    rows: list[dict], out: str | Path | None, title: str, load_before: tuple[float, ...]
) -> None:
    """Print the table with the machine, and write it as JSON and Markdown under ``out``.

    The file records the date, the machine (with the device the PyTorch peers ran
    on) and the load averages (1, 5, 15 min) before the measurements
    (``load_before``, taken by the caller) and after them, so the tables can say
    whether other work was running.
    """
    machine = bench.machine()
    torch = torch_or_none()
    if torch is not None:
        machine["torch"] = torch.__version__
        machine["torch_threads"] = torch.get_num_threads()
        machine["peer_device"] = torch_device(torch)
    load = {"before": list(load_before), "after": list(os.getloadavg())}
    date = datetime.date.today().isoformat()
    header = f"# {title}\n\n{date}; " + ", ".join(f"{k} {v}" for k, v in machine.items())
    header += f"; load average before {load['before']}, after {load['after']}\n\n"
    text = header + markdown(rows)
    print(text, flush=True)
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(text)
        saved = {"date": date, "machine": machine, "load": load, "rows": rows}
        (out / "results.json").write_text(json.dumps(saved, indent=1))
