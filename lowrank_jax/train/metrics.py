"""Run outputs: config.json, metrics.jsonl, TensorBoard events, a progress bar, summary.json.

Only process 0 writes. Tables and plots read only these files, so every number
in a table traces back to a run directory.
"""

from __future__ import annotations

import json
import resource
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tensorboardX import SummaryWriter
from tqdm import tqdm


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
        self.tensorboard = SummaryWriter(str(workdir / "tensorboard"))
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)

    def _drop_lines_after(self, step: int) -> None:
        path = self.workdir / "metrics.jsonl"
        if path.exists():
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            if lines and not _parses(lines[-1]):  # a kill mid-write left half a line
                lines = lines[:-1]
            kept = [line for line in lines if json.loads(line)["step"] <= step]
            path.write_text("".join(line + "\n" for line in kept))

    def step_time(self, seconds: float) -> None:
        self.step_times.append(seconds)

    def write(self, step: int, values: dict) -> None:
        if not self.active:
            return
        record = {"step": step, **{k: float(v) for k, v in values.items()}}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        for key, value in record.items():
            if key != "step":
                self.tensorboard.add_scalar(key, value, step)
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


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


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
