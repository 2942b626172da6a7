"""The SLURM launcher of ``lowrank-jax sweep --launcher slurm``: one job array per submission.

``submit`` writes, under ``workdir/slurm/``, a manifest (the config, the overrides and
the points of this array) and a batch script, and submits it with ``sbatch --array``.
Each array task runs ``python -m lowrank_jax.sweeps.slurm task MANIFEST INDEX``: it trains
its point as the local launcher does (``points.run_point``, the trainer in the
point's sub-workdir; under ``srun`` when a point has several processes, which then
initialise ``jax.distributed`` from SLURM's environment) and leaves its record,
``<job>_<task>.json``, beside its log, ``<job>_<task>.log``.

The sweep side never depends on SLURM's memory of a job: ``live`` asks ``squeue``
which tasks are pending or running; a task that ended without its record (killed,
cancelled, timed out, its node lost) gets its ``failed.json`` from ``scontrol show
job`` while the controller still remembers the job, from ``sacct`` where an
accounting database answers, and from the tail of its log (``ended``). A task
requeued after a preemption starts again and resumes from its checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lowrank_jax.config import ConfigError
from lowrank_jax.sweeps import points as sweep_points

RECORDS = "slurm"  # under the sweep's workdir
LIVE_STATES = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "SUSPENDED")


@dataclasses.dataclass(frozen=True)
class Options:
    """Where and how each point runs: sbatch's flags, never part of a run's config."""

    partition: str | None = None
    time: str | None = None  # sbatch --time, e.g. "2:00:00"
    cpus_per_task: int = 1
    gpus_per_task: int | None = None
    nodes: int = 1  # per point
    tasks_per_node: int = 1  # processes per node per point (jax.distributed across them)
    sbatch: tuple[str, ...] = ()  # further sbatch options, as written
    poll_seconds: float = 5.0  # how often the waiting sweep asks squeue

    @classmethod
    def given(cls, flags: dict) -> dict:
        """The flags among ``flags`` (lowrank-jax sweep's, by argparse name) that set a field."""
        fields = {field.name for field in dataclasses.fields(cls)}
        return {k: v for k, v in flags.items() if k in fields and v not in (None, [])}

    @classmethod
    def from_flags(cls, flags: dict) -> Options:
        """Options from lowrank-jax sweep's flags (each named as its field)."""
        given = cls.given(flags)
        return cls(**{**given, "sbatch": tuple(given.get("sbatch", ()))})

    @property
    def tasks(self) -> int:
        return self.nodes * self.tasks_per_node

    def directives(self) -> list[str]:
        lines = [
            f"--cpus-per-task={self.cpus_per_task}",
            f"--nodes={self.nodes}",
            f"--ntasks-per-node={self.tasks_per_node}",
        ]
        lines += [f"--partition={self.partition}"] if self.partition else []
        lines += [f"--time={self.time}"] if self.time else []
        lines += [f"--gpus-per-task={self.gpus_per_task}"] if self.gpus_per_task else []
        return [*lines, *self.sbatch]


def _run(command: list[str], check: bool = True) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ConfigError(
            f"--launcher: slurm needs {command[0]} on the PATH (SLURM's client commands); "
            "use --launcher local, or a machine with SLURM (scripts/slurm-local starts one)"
        ) from None
    if check and result.returncode:
        error = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"--launcher: {' '.join(command[:2])} failed: {error}")
    return result


def check_commands() -> None:
    """SLURM's client commands on the PATH, or the one-line error naming the missing one."""
    for command in ("sbatch", "squeue", "scontrol"):
        if shutil.which(command) is None:
            _run([command])


def submit(workdir: Path, config: str, points: list[dict], extra: list[str], options) -> str:
    """Submit ``points`` as one job array; returns its job id (also kept in ``jobs.json``)."""
    folder = workdir / RECORDS
    folder.mkdir(parents=True, exist_ok=True)
    number = len(list(folder.glob("array-*.json")))
    manifest = folder / f"array-{number}.json"
    record = {"config": config, "extra": extra, "points": points, "tasks": options.tasks}
    manifest.write_text(json.dumps(record, indent=1) + "\n")
    script = folder / f"array-{number}.sh"
    directives = [
        "--job-name=lowrank-sweep",
        f"--array=0-{len(points) - 1}",
        f"--output={folder}/%A_%a.log",
        "--open-mode=append",  # a requeued task adds to its log
        "--requeue",
        *options.directives(),
    ]
    task = [sys.executable, "-m", "lowrank_jax.sweeps.slurm", "task", str(manifest)]
    script.write_text(
        "#!/bin/bash\n"
        + "".join(f"#SBATCH {d}\n" for d in directives)
        + f"cd {shlex.quote(str(Path.cwd()))}\n"
        + f'exec {shlex.join(task)} "$SLURM_ARRAY_TASK_ID"\n'
    )
    job = _run(["sbatch", "--parsable", str(script)]).stdout.strip().split(";")[0]
    jobs = read_jobs(workdir)
    jobs.append({"job_id": job, "manifest": manifest.name, "points": names_of(points)})
    (folder / "jobs.json").write_text(json.dumps(jobs, indent=1) + "\n")
    return job


def names_of(points: list[dict]) -> list[str]:
    return [sweep_points.point_name(p) for p in points]


def read_jobs(workdir: Path) -> list[dict]:
    path = workdir / RECORDS / "jobs.json"
    return json.loads(path.read_text()) if path.exists() else []


def live(workdir: Path) -> dict[str, tuple[str, str]]:
    """``{point name: (array task id, state)}`` of the pending or running tasks."""
    jobs = read_jobs(workdir)
    if not jobs:
        return {}
    ids = ",".join(job["job_id"] for job in jobs)
    result = _run(["squeue", "-h", "-r", "-j", ids, "-o", "%i %T"], check=False)
    if result.returncode:  # every job forgotten by the controller: nothing is live
        return {}
    by_id = {job["job_id"]: job["points"] for job in jobs}
    found = {}
    for line in result.stdout.splitlines():
        task, _, state = line.strip().partition(" ")
        job, _, index = task.partition("_")
        if state in LIVE_STATES and job in by_id and index.isdigit():
            found[by_id[job][int(index)]] = (task, state)
    return found


def task_record(workdir: Path, task: str) -> dict | None:
    path = workdir / RECORDS / f"{task}.json"
    return json.loads(path.read_text()) if path.exists() else None


def ended(workdir: Path, task: str) -> dict:
    """Why a task that left no record ended: SLURM's word for it and its log's last lines."""
    fields = {}
    shown = _run(["scontrol", "show", "job", task], check=False)
    if not shown.returncode:
        fields = dict(re.findall(r"(\w+)=(\S*)", shown.stdout))
    else:  # forgotten by the controller: an accounting database may still know
        accounted = _run(["sacct", "-n", "-X", "-P", "-j", task, "-o", "State,ExitCode"], False)
        if not accounted.returncode and accounted.stdout.strip():
            state, _, code = accounted.stdout.strip().splitlines()[0].partition("|")
            fields = {"JobState": state.split()[0], "ExitCode": code}
    state = fields.get("JobState", "UNKNOWN")
    details = [f"reason {fields['Reason']}" if fields.get("Reason", "None") != "None" else ""]
    details.append(f"exit code {fields['ExitCode']}" if fields.get("ExitCode") else "")
    detail = ", ".join(d for d in details if d)
    log = workdir / RECORDS / f"{task}.log"
    tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
    error = f"slurm task {task} {state.lower()}" + (f" ({detail})" if detail else "")
    return {"error": error, "slurm_state": state, "log_tail": tail}


def latest_task(workdir: Path, name: str) -> str | None:
    """The array task id (``JOB_INDEX``) that last ran the point ``name``."""
    for job in reversed(read_jobs(workdir)):
        if name in job["points"]:
            return f"{job['job_id']}_{job['points'].index(name)}"
    return None


def run(config: str, workdir: Path, points: list[dict], extra: list[str], options, *, wait=True):
    """Submit the points still to do as one array (none that is live), then, with ``wait``,
    show progress until every task has ended and return the sweep's records."""
    running = live(workdir)
    records, todo = {}, []
    for point in points:
        name = sweep_points.point_name(point)
        expected = sweep_points.expected_config(config, point, extra)
        if sweep_points.finished(workdir / name, expected):
            records[name] = {"name": name, "status": "done", "seconds": 0.0}
        elif name in running:
            task, state = running[name]
            print(f"{name}: still {state.lower()} as slurm task {task}; not submitted again")
        else:
            todo.append(point)
    job = submit(workdir, config, todo, extra, options) if todo else None
    if job:
        print(f"submitted slurm job array {job}: {len(todo)} task(s); logs in {workdir / RECORDS}")
    if not wait:
        if job or running:
            print(f"lowrank-jax sweep --status --workdir {workdir} reports on them")
        return list(records.values())
    names = {sweep_points.point_name(p) for p in points}
    shown = None
    while ours := {n: s for n, s in live(workdir).items() if n in names}:
        counts = {}
        for _, state in ours.values():
            counts[state.lower()] = counts.get(state.lower(), 0) + 1
        line = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        if line != shown:
            print(f"slurm: {line}; {len(names) - len(ours)} of {len(names)} ended", flush=True)
            shown = line
        time.sleep(options.poll_seconds)
    return collect(config, workdir, points, extra, known=records)


def collect(config: str, workdir: Path, points, extra, known=None) -> list[dict]:
    """Every point's record once no task is live; a task that ended without its own
    record (killed, cancelled, timed out) gets ``failed.json`` from ``ended``."""
    records = []
    for point in points:
        name = sweep_points.point_name(point)
        run_dir = workdir / name
        if known and name in known:
            records.append(known[name])
            continue
        task = latest_task(workdir, name)
        own = task_record(workdir, task) if task else None
        if sweep_points.finished(run_dir, sweep_points.expected_config(config, point, extra)):
            seconds = own["seconds"] if own else 0.0
            status = "trained" if own else "done"
            records.append({"name": name, "status": status, "seconds": seconds})
        elif own is not None and own["status"] == "failed":
            records.append(own)
        elif task is None:
            records.append({"name": name, "status": "not run", "seconds": 0.0})
        else:
            why = ended(workdir, task)
            run_dir.mkdir(parents=True, exist_ok=True)
            failure = {"name": name, "status": "failed", "error": why["error"]}
            (run_dir / "failed.json").write_text(
                json.dumps({**failure, **why, "point": point}, indent=1) + "\n"
            )
            records.append({**failure, "seconds": 0.0})
    return records


def status(workdir: str | Path) -> list[dict]:
    """``lowrank-jax sweep --status``: each point of a SLURM sweep, live or ended; once no
    task is live, the failure records of the tasks that ended without their own."""
    workdir = Path(workdir)
    path = workdir / "sweep.json"
    if not path.exists():
        raise ConfigError(f"--workdir: {workdir} holds no sweep (no sweep.json)")
    record = json.loads(path.read_text())
    points, extra = record["points"], record["extra"]
    running = live(workdir)
    if running:
        results = []
        for point in points:
            name = sweep_points.point_name(point)
            expected = sweep_points.expected_config(record["config"], point, extra)
            state = "done" if sweep_points.finished(workdir / name, expected) else "ended"
            state = running[name][1].lower() if name in running else state
            results.append({"name": name, "status": state, "seconds": 0.0})
    else:
        results = collect(record["config"], workdir, points, extra)
    sweep_points.print_results(results, len(points))
    return results


def run_task(manifest_path: str, index: int) -> int:
    """One array task: train its point, leave ``<job>_<task>.json``; exit 1 if it failed."""
    import os

    manifest = Path(manifest_path)
    record = json.loads(manifest.read_text())
    workdir = manifest.parent.parent
    point = record["points"][index]
    launch = ["srun", "--kill-on-bad-exit=1"] if record["tasks"] > 1 else []
    result = sweep_points.run_point(
        record["config"], workdir, point, record["extra"], launch=launch, stream=True
    )
    job = os.environ.get("SLURM_ARRAY_JOB_ID", "local")
    (manifest.parent / f"{job}_{index}.json").write_text(json.dumps(result, indent=1) + "\n")
    return 1 if result["status"] == "failed" else 0


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "task":
        sys.exit("usage: python -m lowrank_jax.sweeps.slurm task MANIFEST INDEX")
    sys.exit(run_task(sys.argv[2], int(sys.argv[3])))
