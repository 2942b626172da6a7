"""FactorizedDense vs dense, forward + backward: measured speedup against the FLOP ratio.

Target 1: at D = 1024 and 8192 tokens, the speedup of a rank-R
factorized layer over the dense one is at least 85% of the FLOP ratio D / (2R).
Both layers are timed in the same run, after compilation, with
``block_until_ready``; the figure is a ratio, never an absolute time. ``make
bench`` also measures it at 4x the tokens. The loss is ½‖y‖², so the
backward gets a dense cotangent (a plain sum's is a broadcast 1, which XLA
folds into reductions: the dense layer's dW and dx products vanish, and the
comparison flattered dense; the figures before 2026-12 were taken that way).

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
from common import target
from flax import nnx

from lowrank_jax.layers import FactorizedDense


def step_time(layer: nnx.Module, x: jax.Array, repeats: int, inner: int) -> float:
    """Median seconds of one forward + backward + SGD update, device time only.

    ``inner`` steps run inside one jitted ``fori_loop`` (each updates the params
    and nudges the input, so nothing is hoisted or dead), which takes Python
    dispatch out of the figure: on a GPU a 1024-wide layer's step is tens of µs,
    about what one dispatch costs.
    """
    graphdef, params = nnx.split(layer)

    def loss(params, x):
        # ½‖y‖²: its gradient is y itself, a dense cotangent. (A plain sum's is a
        # broadcast 1, which XLA folds into reductions: no dW or dx product is formed.)
        return 0.5 * jnp.sum(jnp.square(nnx.merge(graphdef, params)(x).astype(jnp.float32)))

    @jax.jit
    def steps(params, x):
        def body(_, carry):
            params, x = carry
            grad_params, grad_x = jax.grad(loss, argnums=(0, 1))(params, x)
            params = jax.tree.map(lambda p, g: p - 1e-6 * g, params, grad_params)
            return params, x + 1e-6 * grad_x

        return jax.lax.fori_loop(0, inner, body, (params, x))

    jax.block_until_ready(steps(params, x))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(steps(params, x))
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--ranks", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=10, help="timed calls (median)")
    parser.add_argument("--inner", type=int, default=10, help="steps inside one jitted call")
    parser.add_argument("--quick", action="store_true", help="D=64, 256 tokens, 2x2 steps")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    if args.quick:
        args.dim, args.tokens, args.ranks, args.repeats, args.inner = 64, 256, [8, 16], 2, 2
    dtype = jnp.dtype(args.dtype)
    device = jax.devices()[0]
    print(
        f"# FactorizedDense vs dense, fwd+bwd, D={args.dim}, {args.tokens} tokens, {args.dtype}\n"
        f"# {device.device_kind} ({device.platform}), jax {jax.__version__}, "
        f"{platform.machine()}, {jax.device_count()} device(s)"
    )
    x = jax.random.normal(jax.random.key(0), (args.tokens, args.dim), dtype)
    dense = nnx.Linear(args.dim, args.dim, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0))
    dense_time = step_time(dense, x, args.repeats, args.inner)
    rows = []
    print(f"dense step: {dense_time * 1e3:.3f} ms")
    print("| rank | FLOP ratio D/(2R) | step ms | speedup | speedup / FLOP ratio |")
    print("|---:|---:|---:|---:|---:|")
    for rank in args.ranks:
        layer = FactorizedDense(
            args.dim, args.dim, rank, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(1)
        )
        seconds = step_time(layer, x, args.repeats, args.inner)
        speedup = dense_time / seconds
        flop_ratio = args.dim / (2 * rank)
        rows.append(
            {"rank": rank, "flop_ratio": flop_ratio, "seconds": seconds, "speedup": speedup}
        )
        print(
            f"| {rank} | {flop_ratio:.2f} | {seconds * 1e3:.3f} | {speedup:.2f} "
            f"| {speedup / flop_ratio:.0%} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            meta = {
                "device": device.device_kind,
                "jax": jax.__version__,
                "dense_seconds": dense_time,
            }
            json.dump({"args": vars(args), **meta, "rows": rows}, f, indent=1)
    return rows


def targets(quick: bool) -> list[dict]:
    dim, tokens = (64, 256) if quick else (1024, 8192)
    shape = ["--dim", "64", "--ranks", "8", "16", "--repeats", "2", "--inner", "2"] if quick else []
    rows = []
    for count, extra in ((tokens, []), (4 * tokens, ["--repeats", "3", "--inner", "5"])):
        for row in main([*shape, "--tokens", str(count), *extra]):
            ratio = row["speedup"] / row["flop_ratio"]
            rows.append(
                target(
                    f"1. FactorizedDense R={row['rank']} vs dense, fwd+bwd (D={dim}, "
                    f"{count} tokens)",
                    f"{row['speedup']:.2f}× = {ratio:.0%} of D/(2R) = {row['flop_ratio']:.1f}",
                    "≥ 85% of D/(2R)",
                    [("speed-up / D/(2R)", ratio, ">=", 0.85)],
                )
            )
    return rows


if __name__ == "__main__":
    main()
