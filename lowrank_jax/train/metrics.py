"""Run outputs: config.json, metrics.jsonl, TensorBoard events, a progress bar, summary.json.

Only process 0 writes. Tables and plots read only these files, so every number
in a table traces back to a run directory. TensorBoard's events are written by a
thread of their own and flushed record by record: training never waits on them,
a killed run keeps what it logged, and a write error (a full disk) turns
TensorBoard off with one warning line while ``metrics.jsonl`` carries on.
"""

from __future__ import annotations

import contextlib
import json
import queue
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.summary import scalar
from tqdm import tqdm

from lowrank_jax.config import ConfigError


def matmul_peak_flops() -> float:
    """FLOP/s of a large square matmul on the first device: the MFU denominator."""
    gpu = jax.local_devices()[0].platform != "cpu"
    n, dtype = (8192, jnp.bfloat16) if gpu else (1024, jnp.float32)
    a = jnp.ones((n, n), dtype)
    matmul = jax.jit(lambda a: a @ a)
    matmul(a).block_until_ready()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


def peak_memory_bytes() -> tuple[int, str]:
    """Peak device memory where the backend reports it, else the process's peak RSS."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host_rss"


class MetricsWriter:
    """Writes the run's files in ``workdir`` (process 0 only)."""

    def __init__(self, workdir: Path, *, total_steps: int, start_step: int):
        self.workdir = workdir
        self.active = jax.process_index() == 0
        self.step_times: list[float] = []
        if not self.active:
            return
        self._drop_lines_after(start_step)  # a resumed run rewrites what came after its checkpoint
        self.jsonl = open(workdir / "metrics.jsonl", "a")  # noqa: SIM115
        self.tensorboard = TensorBoard(workdir / "tensorboard")
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)

    def _drop_lines_after(self, step: int) -> None:
        """Keep the records up to ``step``; damaged lines go, with a warning unless only the
        last was (half a line: what a kill mid-write leaves)."""
        path = self.workdir / "metrics.jsonl"
        if not path.exists():
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        records = [_record(line) for line in lines]
        damaged = sum(record is None for record in records[:-1])
        if damaged:
            print(f"warning: {path}: dropped {damaged} damaged lines", file=sys.stderr, flush=True)
        kept = [line for line, r in zip(lines, records, strict=True) if r and r["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))

    def step_time(self, seconds: float) -> None:
        self.step_times.append(seconds)

    def write(self, step: int, values: dict) -> None:
        if not self.active:
            return
        record = {"step": step, **{k: float(v) for k, v in values.items()}}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        self.tensorboard.add(step, {k: v for k, v in record.items() if k != "step"})
        shown = {k: f"{record[k]:.4f}" for k in ("loss", "accuracy", "val_accuracy") if k in record}
        self.bar.set_postfix(shown)

    def advance(self, steps: int = 1) -> None:
        if self.active:
            self.bar.update(steps)

    def median_step_time(self) -> float | None:
        return statistics.median(self.step_times) if self.step_times else None

    def close(self) -> None:
        if self.active:
            self.bar.close()
            self.jsonl.close()
            self.tensorboard.close()


class TensorBoard:
    """Scalars to TensorBoard event files, written and flushed by a thread of its own.

    ``add`` never blocks: a record that finds ``BACKLOG`` records still waiting
    (a stalled disk) is dropped, since metrics.jsonl has it. The first write error
    turns the writer off with one warning line on stderr.
    """

    BACKLOG = 1024

    def __init__(self, directory: Path):
        self.directory = directory
        self.records: queue.Queue = queue.Queue(maxsize=self.BACKLOG)
        self.failed = False
        self.thread = threading.Thread(target=self._write, name="tensorboard", daemon=True)
        self.thread.start()

    def add(self, step: int, values: dict[str, float]) -> None:
        if self.failed:
            return
        with contextlib.suppress(queue.Full):
            self.records.put_nowait((step, values, time.time()))

    def _write(self) -> None:
        events = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            events = EventsWriter(str(self.directory / "events"))
            while (item := self.records.get()) is not None:
                step, values, wall_time = item
                for tag, value in values.items():
                    events.write_event(
                        Event(wall_time=wall_time, step=step, summary=scalar(tag, value))
                    )
                events.flush()
        except OSError as error:
            self.failed = True
            print(
                f"warning: TensorBoard is off: cannot write {self.directory} "
                f"({error.strerror or error}); metrics.jsonl still has every record",
                file=sys.stderr,
                flush=True,
            )
        finally:
            if events is not None:
                with contextlib.suppress(OSError):
                    events.close()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued (waiting at most ``timeout`` seconds) and stop."""
        if not self.failed:
            with contextlib.suppress(queue.Full):
                self.records.put(None, timeout=timeout)
        self.thread.join(timeout)


def _record(line: str) -> dict | None:
    """A metrics record, or None for a damaged line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("step"), int) else None


def read_json(path: Path):
    """The JSON in a run file; one that does not parse is a ``ConfigError`` naming it."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: damaged, not JSON ({_why(error)})") from None


def read_jsonl(path: Path) -> list[dict]:
    """The records of a ``metrics.jsonl``; a line that does not parse is a ``ConfigError``."""
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"{path}: damaged, line {number} is not JSON ({_why(error)})"
            ) from None
    return records


def _why(error: ValueError) -> str:
    return error.msg if isinstance(error, json.JSONDecodeError) else str(error).split(":")[0]


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (process 0 only)."""
    if jax.process_index() != 0:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=_plain) + "\n")
    tmp.replace(path)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")
