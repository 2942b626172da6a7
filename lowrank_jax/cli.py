"""The ``lowrank-jax`` command line.

Commands arrive with their issues: ``train``, ``sweep`` and ``report`` come with
the trainer and the sweeps; ``demo`` shows the layers at work now.
"""

from __future__ import annotations

import argparse
import sys

from lowrank_jax import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lowrank-jax",
        description="Low-rank factorization in Transformers on JAX + Flax NNX.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser("demo", help="truncated SVD and LoRA-rank tables (under a minute)")
    demo.add_argument("--quick", action="store_true", help="fewer ranks and steps")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lowrank-jax`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "demo":
        from lowrank_jax import demo

        demo.run(quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
