"""FactorizedDense vs dense, forward + backward: measured speedup against the FLOP ratio.

Target (issue 8, target 1): at D = 1024 and 8192 tokens, the speedup of a rank-R
factorized layer over the dense one is at least 85% of the FLOP ratio D / (2R).
Both layers are timed in the same run, after compilation, with
``block_until_ready``; the figure is a ratio, never an absolute time.

    python benchmarks/factorized_dense.py                      # D=1024, 8192 tokens
    python benchmarks/factorized_dense.py --quick              # tiny, checks it works
    python benchmarks/factorized_dense.py --dtype bfloat16 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from lowrank_jax.layers import FactorizedDense


def step_time(layer: nnx.Module, x: jax.Array, repeats: int) -> float:
    """Median seconds of one jitted forward + backward (grads of params and input)."""
    graphdef, params = nnx.split(layer)

    @jax.jit
    def fwd_bwd(params, x):
        def loss(params, x):
            return jnp.sum(nnx.merge(graphdef, params)(x).astype(jnp.float32))

        return jax.grad(loss, argnums=(0, 1))(params, x)

    jax.block_until_ready(fwd_bwd(params, x))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fwd_bwd(params, x))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--ranks", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="D=64, 256 tokens, 3 repeats")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    if args.quick:
        args.dim, args.tokens, args.ranks, args.repeats = 64, 256, [8, 16], 3
    dtype = jnp.dtype(args.dtype)
    device = jax.devices()[0]
    print(
        f"# FactorizedDense vs dense, fwd+bwd, D={args.dim}, {args.tokens} tokens, {args.dtype}\n"
        f"# {device.device_kind} ({device.platform}), jax {jax.__version__}, "
        f"{platform.machine()}, {jax.device_count()} device(s)"
    )
    x = jax.random.normal(jax.random.key(0), (args.tokens, args.dim), dtype)
    dense = nnx.Linear(args.dim, args.dim, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0))
    dense_time = step_time(dense, x, args.repeats)
    rows = []
    print("| rank | FLOP ratio D/(2R) | speedup | speedup / FLOP ratio |")
    print("|---:|---:|---:|---:|")
    for rank in args.ranks:
        layer = FactorizedDense(
            args.dim, args.dim, rank, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(1)
        )
        speedup = dense_time / step_time(layer, x, args.repeats)
        flop_ratio = args.dim / (2 * rank)
        rows.append(
            {
                "rank": rank,
                "flop_ratio": flop_ratio,
                "speedup": speedup,
                "device": device.device_kind,
            }
        )
        print(f"| {rank} | {flop_ratio:.2f} | {speedup:.2f} | {speedup / flop_ratio:.0%} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
