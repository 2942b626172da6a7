"""The ``lowrank-jax`` command line.

    lowrank-jax train --config configs/tiny.py:runlocal --workdir runs/tiny \
        [--config.train.steps=200]
    lowrank-jax surgery --config configs/lora_minilm.py:method=lora [--config.model.lora.rank=4]
    lowrank-jax demo [--quick]

Bad input (an unknown config key, a wrong type, a bad rank or kind, a batch
that does not divide over the devices, a workdir holding another config, ...)
prints one line naming the field and exits with code 2, before any compute and
without touching the workdir. A non-finite loss exits with code 3, a full disk
with code 4 (one line: where, the bytes a checkpoint needs, the last one kept).
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

from lowrank_jax import __version__

TRAIN_HELP = """\
usage: lowrank-jax train --config FILE[:ARGS] --workdir DIR [--config.FIELD=VALUE ...]
         [--force] [--coordinator_address HOST:PORT --num_processes N --process_id I]

Train (or resume) the config's run in DIR.

  --config FILE[:ARGS]   an ml_collections config file with get_config(arg), e.g.
                         configs/tiny.py:runlocal,attention=performer,rank=8
  --config.FIELD=VALUE   override any field, e.g. --config.train.steps=200
  --workdir DIR          run directory: config.json, metrics.jsonl, tensorboard/,
                         checkpoints/, summary.json; resumes from its checkpoints
  --force                replace a run of a different config in DIR
  --coordinator_address, --num_processes, --process_id
                         several hosts (jax.distributed); default from
                         JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lowrank-jax",
        description="Low-rank factorization in Transformers on JAX + Flax NNX.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "train", help="train a config (see `lowrank-jax train --help`)", add_help=False
    )
    commands.add_parser(
        "surgery",
        help="preview a config's LoRA / adapters / factorization on shapes (--help)",
        add_help=False,
    )
    sweep = commands.add_parser(
        "sweep",
        help="train every point of a config's get_sweep(arg)",
        description="Train every point; other --config.FIELD=VALUE flags apply to all points.",
        allow_abbrev=False,
    )
    sweep.add_argument("--config", help="FILE[:ARGS] with get_config and get_sweep")
    sweep.add_argument("--workdir", required=True, help="one sub-workdir per point")
    sweep.add_argument("--jobs", type=int, default=1, help="points trained at once")
    sweep.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="train every point with seeds 0..N-1 (a point that sets seed is taken as it is)",
    )
    sweep.add_argument(
        "--force", action="store_true", help="retrain points whose run holds another config"
    )
    sweep.add_argument("--launcher", default="local", help="local (processes here) | slurm")
    cluster = sweep.add_argument_group("--launcher slurm: sbatch's options per point")
    for flag, kind, text in (
        ("--partition", str, "partition"),
        ("--time", str, "time limit, e.g. 2:00:00"),
        ("--cpus-per-task", int, "CPUs per process (default 1)"),
        ("--gpus-per-task", int, "GPUs per process"),
        ("--nodes", int, "nodes per point (default 1)"),
        ("--tasks-per-node", int, "processes per node per point (default 1)"),
        ("--poll-seconds", float, "how often to ask squeue (default 5)"),
    ):
        cluster.add_argument(flag, type=kind, help=text)
    cluster.add_argument("--sbatch", action="append", default=[], help="another sbatch option")
    cluster.add_argument("--no-wait", action="store_true", help="return once submitted")
    cluster.add_argument("--status", action="store_true", help="report on --workdir's sweep")
    report = commands.add_parser("report", help="results.md, results.csv and plots of a sweep")
    report.add_argument("workdir", help="a sweep's workdir")
    demo = commands.add_parser("demo", help="truncated SVD and LoRA-rank tables (under a minute)")
    demo.add_argument("--quick", action="store_true", help="fewer ranks and steps")
    tables = commands.add_parser(
        "tables",
        help="rewrite the READMEs' generated tables from the committed results",
        description="Rewrite every <!-- generated:NAME --> block from its folder's tables.py.",
    )
    tables.add_argument(
        "--check", action="store_true", help="change nothing; list stale blocks, exit 1 if any"
    )
    tables.add_argument("--root", default=".", help="the repository root (default: .)")
    return parser


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _one_line(error: BaseException) -> str:
    """The informative line of an absl / ml_collections error (they nest tracebacks)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"^[\w.]*(Error|Exception): ", line)]
    if raised:
        return raised[-1].split(": ", 1)[1]
    errno = [line for line in lines if "[Errno" in line]
    if errno:
        return errno[-1]
    return lines[0] if lines else type(error).__name__


def _unknown_override_in(argv: list[str]) -> str | None:
    """Load the config file without overrides and name an override that has no field.

    (absl cannot do it: ml_collections reads the overrides from ``sys.argv`` itself.)
    """
    if not any(arg.startswith("--config.") for arg in argv):
        return None
    spec = next(
        (
            argv[i + 1] if arg == "--config" and i + 1 < len(argv) else arg.split("=", 1)[1]
            for i, arg in enumerate(argv)
            if arg == "--config" or arg.startswith("--config=")
        ),
        None,
    )
    if not spec:
        return None
    from lowrank_jax.config import load_config

    try:
        config = load_config(spec)
    except Exception:  # the file's own error is reported by absl's parse, as it is
        return None
    from lowrank_jax.config import unknown_override

    return unknown_override(argv, config)


def _define_flags(values) -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file(
        "config", None, "config file", flag_values=values, lock_config=True
    )
    flags.DEFINE_string("workdir", None, "run directory", flag_values=values)
    flags.DEFINE_bool("force", False, "replace a run of another config", flag_values=values)
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0", flag_values=values)
    flags.DEFINE_integer("num_processes", None, "number of processes", flag_values=values)
    flags.DEFINE_integer("process_id", None, "this process's index", flag_values=values)


SURGERY_HELP = """\
usage: lowrank-jax surgery --config FILE[:ARGS] [--config.FIELD=VALUE ...]

Preview a config's surgery on abstract shapes (no weights, seconds): every layer
its LoRA / adapter rules select (and every factorized layer), the rank and alpha
each gets, the parameters added, and the totals. A rule selecting nothing: one
line naming the field, exit 2.
"""


def _parse_train_flags(argv: list[str], command: str = "train"):
    """absl + ml_collections flags for ``train`` (or ``surgery``: no workdir);
    ``ConfigError`` (one line) on any bad value."""
    from absl import flags

    from lowrank_jax.config import ConfigError

    values = flags.FlagValues()
    _define_flags(values)
    given, sys.argv = sys.argv, [f"lowrank-jax {command}", *argv]  # ml_collections reads it
    try:
        values(sys.argv)
        config = values.config
        if config is not None:
            config.keys()  # a config file that failed to load raises only when used
    except Exception as error:  # absl / ml_collections report bad values in many types
        raise ConfigError(_unknown_override_in(argv) or _one_line(error)) from None
    finally:
        sys.argv = given
    if config is None:
        if any(arg == "--config" or arg.startswith("--config=") for arg in argv):
            raise ConfigError("--config: its get_config returned None; it must return the config")
        raise ConfigError("--config: required, e.g. --config configs/tiny.py:runlocal")
    if not values.workdir and command == "train":
        raise ConfigError("--workdir: required, e.g. --workdir runs/tiny")
    return config, values


def surgery(argv: list[str]) -> int:
    if {"-h", "--help", "-help"} & set(argv):
        print(SURGERY_HELP)
        return 0
    from lowrank_jax.config import ConfigError

    try:
        config, _ = _parse_train_flags(argv, command="surgery")
        from lowrank_jax import preview

        print(preview.render(config))
    except ConfigError as error:
        return _fail(str(error))
    return 0


def train(argv: list[str]) -> int:
    if {"-h", "--help", "-help"} & set(argv):
        print(TRAIN_HELP)
        return 0
    from lowrank_jax.config import ConfigError

    try:
        config, values = _parse_train_flags(argv)
        from lowrank_jax.train import sharding

        sharding.initialize_distributed(
            values.coordinator_address, values.num_processes, values.process_id
        )
        from lowrank_jax.train.checkpoint import drop_orbax_echoes
        from lowrank_jax.train.trainer import DiskFullError, NonFiniteLossError, train_and_evaluate

        drop_orbax_echoes()  # a failure is one line; orbax's futures echo it until exit

        try:
            summary = train_and_evaluate(config, values.workdir, force=values.force)
        except NonFiniteLossError as error:
            return _fail(str(error), code=3)
        except DiskFullError as error:
            return _fail(error.strerror, code=4)
    except ConfigError as error:
        return _fail(str(error))
    import jax

    if jax.process_index():
        return 0
    accuracy, loss = summary["test_accuracy"], summary["test_loss"]
    result = f"test accuracy {accuracy:.4f}" if accuracy is not None else f"test loss {loss:.4f}"
    result += f" (best on validation at step {summary['best_step']})"
    print(
        f"done: {values.workdir}: {result}, "
        f"median step {summary['median_step_time_s'] or float('nan'):.4f} s"
    )
    return 0


def sweep(args, extra: list[str]) -> int:
    from lowrank_jax.config import ConfigError
    from lowrank_jax.sweeps import slurm
    from lowrank_jax.sweeps.launch import run_sweep

    given = slurm.Options.given(vars(args))
    try:
        if args.launcher != "slurm" and (given or args.no_wait or args.status):
            flag = next(iter(given), "no_wait" if args.no_wait else "status")
            raise ConfigError(f"--{flag.replace('_', '-')}: only with --launcher slurm")
        if args.status:
            results = slurm.status(args.workdir)
        elif not args.config:
            raise ConfigError("--config: required, e.g. --config configs/rank_sweep.py")
        else:
            results = run_sweep(
                args.config, args.workdir, jobs=args.jobs, extra=extra, seeds=args.seeds,
                launcher=args.launcher, slurm=slurm.Options.from_flags(vars(args)),
                wait=not args.no_wait,
            )  # fmt: skip
    except (ConfigError, OSError) as error:
        return _fail(_one_line(error))
    counts = collections.Counter(r["status"] for r in results)
    failed = counts.pop("failed", 0)
    done = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none done"
    print(f"sweep {args.workdir}: {done}, {failed} failed")
    return 1 if failed else 0


def report(workdir: str) -> int:
    from lowrank_jax.config import ConfigError
    from lowrank_jax.sweeps.report import write_report

    try:
        written = write_report(workdir)
    except ConfigError as error:
        return _fail(str(error))
    print(written.table)
    print(f"tables: {workdir}/results.md, {workdir}/results.csv")
    print("plots: " + ", ".join(str(p) for p in written.plots))
    for line in written.warnings:
        print(line)
    return 0


def tables(root: str, check: bool) -> int:
    from lowrank_jax.tables import TablesError, update

    try:
        found = update(root, check=check)
    except TablesError as error:
        return _fail(str(error))
    for item in found:
        print(item if check else f"updated {item}")
    if check and found:
        print("stale generated blocks: run `lowrank-jax tables`", file=sys.stderr)
    return 1 if check and found else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lowrank-jax`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "train":
        return train(argv[1:])
    if argv and argv[0] == "surgery":
        return surgery(argv[1:])
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "sweep":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "sweep":
        return sweep(args, [*extra, *(["--force"] if args.force else [])])
    if args.command == "report":
        return report(args.workdir)
    if args.command == "tables":
        return tables(args.root, args.check)
    if args.command == "demo":
        from lowrank_jax import demo

        demo.run(quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
