"""Every target of the benchmark suite, measured in one run: ``make bench`` (``--quick`` in CI).

    python benchmarks/run.py                      # all targets; writes benchmarks/results/
    python benchmarks/run.py --quick --out /tmp/b # tiny shapes: checks that it all works
    python benchmarks/run.py --only attention lora_step

Each benchmark module has ``targets(quick) -> rows``; the rows (target,
measured figure, goal, pass / falls short) are printed with the machine and
versions and written as ``results.json`` and ``results.md``, with the date and
the load averages before and after the run (``common.report``). The targets are
numbered 1 to 9: 1 ``factorized_dense``, 2 ``encoder_mfu``, 3, 4 and 6
``attention``, 5, 6 and 9 ``lora_step``, 7 and 8 ``recompile``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import report  # noqa: E402

BENCHMARKS = ("factorized_dense", "encoder_mfu", "attention", "lora_step", "recompile")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes (CI)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--out", default=str(HERE / "results"), help="results.json/.md here")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    rows = []
    for name in args.only:
        began = time.perf_counter()
        print(f"## {name}", flush=True)
        rows += importlib.import_module(name).targets(args.quick)
        print(f"({name}: {time.perf_counter() - began:.0f} s)\n", flush=True)
    title = (
        "benchmarks (quick form: tiny shapes, figures meaningless)" if args.quick else "benchmarks"
    )
    report(rows, args.out, title, load_before)
    return rows


if __name__ == "__main__":
    main()
