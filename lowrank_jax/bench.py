"""Measuring helpers for experiments and benchmarks: step times and compiled memory.

Every figure the experiments report is a ratio of two measurements taken in the
same run, so absolute times only need to be comparable within a run: medians
over repeats, after a warm-up call that compiles, with ``block_until_ready``.

Memory is XLA's own account of a compiled program (``memory_analysis``):
arguments + outputs + temporaries - donated (aliased) bytes, the most the
program holds at once. It is the same on every backend, where device counters
(``memory_stats``) exist only on GPU/TPU.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from lowrank_jax import build, surgery
from lowrank_jax.models import default_config
from lowrank_jax.train import sharding
from lowrank_jax.train.state import single_device_mesh, train_state


def lra_text_config(length: int, *, tiny: bool = False) -> ml_collections.ConfigDict:
    """LRA's byte-level text classifier at sequence length ``length`` (softmax, dense FFN).

    4 layers, embedding 256, 4 heads, MLP 1024, vocabulary 256 (LRA's
    ``text_classification`` config, Tay et al. 2020), mean pooling and no CLS
    token so that every mixer sees exactly ``length`` positions; Linformer
    P = 256 and Performer M = 256 (softmax kernel). These two are ours, not LRA's:
    its released text configs give Linformer ``low_rank_features=32`` and the
    Performer's default, the generalized ReLU kernel applied to the queries and
    keys themselves (``features_type='deterministic'``, no random features).
    ``tiny``: 1 layer, 32 wide, P = M = 16.
    """
    model = default_config()
    model.update(
        vocab_size=256,
        num_classes=2,
        max_len=length,
        dim=32 if tiny else 256,
        heads=4,
        num_layers=1 if tiny else 4,
        dropout=0.1,
        cls_token=False,
        pooling="mean",
    )
    model.ffn.dim = 64 if tiny else 1024
    model.attention.linformer.proj_len = 16 if tiny else 256
    model.attention.performer.num_features = 16 if tiny else 256
    return model


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``call()`` (results blocked on) over ``repeats``, after one warm-up."""
    jax.block_until_ready(call())
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def compiled_bytes(compiled) -> int:
    """Arguments + outputs + temporaries - aliased bytes of a compiled XLA program."""
    stats = compiled.memory_analysis()
    return int(
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )


def compiled_flops(compiled) -> float:
    """XLA's FLOP count of a compiled program (its cost analysis; deterministic)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older jax: one dict per program
        analysis = analysis[0]
    return float(analysis["flops"])


# a product's result shape, also the first of a tuple result (a GPU's cuBLAS gemm custom call)
_PRODUCT = re.compile(
    r"= \(?\w+\[([\d,]+)\]\S*(?:, \w+\[[\d,]*\]\S*)*\)? (?:dot|convolution|custom-call)\("
)


def frozen_weight_products(compiled, model: nnx.Module, trainable: str) -> list[str]:
    """The products in a compiled step whose result has a frozen weight matrix's shape.

    The gradient of a weight [in, out] is a contraction over the tokens with that
    shape (or its transpose); a step that differentiates only the ``trainable``
    parameters should form none for the others. The HLO's dot / convolution /
    custom-call lines with such a result are returned (empty: none formed).
    Shapes that a trainable parameter also has are left out (they would be
    ambiguous), so the check is only as sharp as the frozen shapes are distinct
    from the trainable ones and from the activations' (a [tokens, D] product
    matches a [D, D] weight when there are D tokens: choose shapes that differ).
    """
    wrt = surgery.trainable_filter(model, trainable)
    trained, frozen = (
        {
            shape
            for leaf in jax.tree.leaves(nnx.state(model, which))
            if leaf.ndim == 2
            for shape in (leaf.shape, leaf.shape[::-1])
        }
        for which in (wrt, nnx.All(nnx.Param, nnx.Not(wrt)))
    )
    shapes = frozen - trained
    return [
        line.strip()
        for line in compiled.as_text().splitlines()
        if (match := _PRODUCT.search(line))
        and tuple(int(d) for d in match.group(1).split(",")) in shapes
    ]


def _batch(model_config, batch_size: int, length: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "tokens": rng.integers(1, model_config.vocab_size, (batch_size, length), np.int32),
        "mask": np.ones((batch_size, length), bool),
        "label": rng.integers(0, model_config.num_classes, batch_size, np.int32),
    }


def forward_bytes(model_config, batch_size: int, length: int) -> int:
    """Compiled bytes of the forward pass (eval mode) at this batch, nothing allocated.

    The model and the batch are shapes only (``nnx.eval_shape``,
    ``jax.ShapeDtypeStruct``): XLA compiles the program and accounts its memory
    (``compiled_bytes``) for batches no device here could hold.
    """
    model = nnx.eval_shape(lambda: build.model(model_config, rngs=build.run_rngs(0)))
    model.eval()
    graphdef, state = nnx.split(model)

    def forward(state, tokens, mask):
        return nnx.merge(graphdef, state)(tokens, mask)

    tokens = jax.ShapeDtypeStruct((batch_size, length), np.int32)
    mask = jax.ShapeDtypeStruct((batch_size, length), np.bool_)
    return compiled_bytes(jax.jit(forward).lower(state, tokens, mask).compile())


def largest_batch(model_config, length: int, limit_bytes: int) -> int:
    """The largest batch whose forward pass fits in ``limit_bytes`` (0 if none does).

    Memory is affine in the batch (parameters + batch × activations), so two
    compilations predict it; the prediction is then checked (it fits, one more
    does not) and corrected by bisection where the compiler's buffer
    assignment makes it step.
    """

    def fits(batch: int) -> bool:
        return forward_bytes(model_config, batch, length) <= limit_bytes

    one, two = (forward_bytes(model_config, b, length) for b in (1, 2))
    if one > limit_bytes:
        return 0
    guess = max(1, (limit_bytes - one) // max(two - one, 1) + 1)
    if fits(guess):  # low fits, high does not
        low, high = guess, guess + 1
        while fits(high):  # predicted short: double until a batch does not fit
            low, high = high, 2 * high
    else:
        low, high = 1, guess
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


class EncoderForward:
    """Inference: the jitted forward pass (eval mode) of ``model_config`` on one device.

    ``seconds(repeats)``, ``bytes`` and ``flops`` as for ``EncoderStep``.
    """

    def __init__(self, model_config, batch_size: int, length: int, seed: int = 0):
        model = build.model(model_config, rngs=build.run_rngs(seed))
        model.eval()
        graphdef, self.state = nnx.split(model)
        self.batch = _batch(model_config, batch_size, length, seed)

        def forward(state, tokens, mask):
            return nnx.merge(graphdef, state)(tokens, mask)

        args = (self.state, self.batch["tokens"], self.batch["mask"])
        self.compiled = jax.jit(forward).lower(*args).compile()
        self.bytes = compiled_bytes(self.compiled)
        self.flops = compiled_flops(self.compiled)

    def seconds(self, repeats: int) -> float:
        """Median seconds per forward pass (compiled before; the warm-up call is not counted)."""
        return median_seconds(
            lambda: self.compiled(self.state, self.batch["tokens"], self.batch["mask"]), repeats
        )


class EncoderStep:
    """The trainer's own jitted training step for ``model_config`` on one device.

    ``EncoderStep(model_config, train_config, batch_size, length)`` builds it by
    ``train_state``, as the trainer does; ``seconds(repeats)`` runs real
    optimizer steps (state threaded through, as in training), ``bytes`` is the
    step program's compiled footprint, ``flops`` XLA's count of its FLOPs and
    ``optimizer_bytes`` its optimizer state; ``train_config.trainable`` picks what
    trains.
    """

    def __init__(
        self,
        model_config: ml_collections.ConfigDict,
        train_config: ml_collections.ConfigDict,
        batch_size: int,
        length: int,
        seed: int = 0,
    ):
        config = ml_collections.ConfigDict(
            {"seed": seed, "model": model_config, "train": train_config}
        )
        run = train_state(config, single_device_mesh())
        self.optimizer_bytes = run.params["optimizer_state_bytes"]
        self.state, self.step = run.state, run.train_step
        batch = _batch(model_config, batch_size, length, seed)
        self.batch = sharding.place_batch(batch, run.mesh, batch_size)
        # One compilation, used for both the memory account and the timed steps.
        self.compiled = self.step.lower(self.state, self.batch).compile()
        self.bytes = compiled_bytes(self.compiled)
        self.flops = compiled_flops(self.compiled)
        self.model = run.merge()  # for its structure and shapes: the steps donate its arrays

    def _run(self):
        self.state, metrics = self.compiled(self.state, self.batch, self.step.teacher_state)
        return metrics

    def seconds(self, repeats: int) -> float:
        """Median seconds per training step (the first call compiles and is not counted)."""
        return median_seconds(self._run, repeats)


def _cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else None."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), None)


def _memory_gib() -> float | None:
    """The machine's memory in GiB from /proc/meminfo (Linux), else None."""
    try:
        total = next(
            line for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line
        )
    except (OSError, StopIteration):
        return None
    return round(int(total.split()[1]) / 2**20, 1)


def machine() -> dict:
    """What the figures were measured on: platform, device, versions."""
    import flax

    return {
        "platform": platform.platform(),
        "processor": _cpu_model() or platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "python": platform.python_version(),
    }
