"""Attention, forward + backward: exact (ours, XLA's, PyTorch SDPA), Linformer, Performer, peers.

Targets:
  3. exact softmax attention (B = 4, N = 4096, D = 256, H = 4) at most 1.0x the
     time of PyTorch's ``scaled_dot_product_attention`` on the same CPU;
  4. Linformer (P = 256) and Performer (M = 256) at least 5.7x faster than the
     best exact attention on this machine at N = 4K, compiled memory at most
     0.11x; 8K and 16K reported;
  6. our Performer and Linformer at most 1.0x the time of ``performer-pytorch``
     (``FastAttention``, the mixer) and ``linformer`` (``LinformerSelfAttention``,
     the whole layer with its projections) at the same shapes.

Mixers take q, k, v [B, N, H, K] and are differentiated w.r.t. all three (and
their own parameters); layers take x [B, N, D]. Every time is a median after a
compiling / warm-up call; memory is XLA's compiled footprint of the fwd+bwd
program (``bench.compiled_bytes``; PyTorch has no equivalent on the CPU).

    python benchmarks/attention.py            # N = 4096, 8192, 16384
    python benchmarks/attention.py --quick    # tiny shapes: checks that it works
"""

from __future__ import annotations

import common
import jax
from common import target, torch_device, torch_or_none, torch_seconds
from flax import nnx

from lowrank_jax import bench
from lowrank_jax.attention import make_attention
from lowrank_jax.attention.linformer import LinformerAttention
from lowrank_jax.attention.performer import PerformerAttention
from lowrank_jax.attention.softmax import attend

HEADS, DIM = 4, 256


def _jax_mixer(kind: str, n: int, features: int):
    """A function (q, k, v) -> [B, N, H, K] for ``kind``, with its parameters closed over."""
    if kind in ("xla", "blocked"):
        return lambda q, k, v: attend(q, k, v, implementation=kind)
    head_dim, rngs = DIM // HEADS, nnx.Rngs(0)
    if kind == "linformer":
        module = LinformerAttention(
            heads=HEADS,
            head_dim=head_dim,
            max_len=n,
            proj_len=features,
            sharing="headwise",
            shared={},
            rngs=rngs,
        )
    else:
        module = PerformerAttention(
            heads=HEADS, head_dim=head_dim, max_len=n, num_features=features, rngs=rngs
        )
    graphdef, state = nnx.split(module)
    return lambda q, k, v: nnx.merge(graphdef, state)(q, k, v)


def jax_mixer(kind: str, batch: int, n: int, features: int, repeats: int) -> dict:
    """Seconds and compiled bytes of one fwd+bwd of our mixer ``kind``."""
    mixer = _jax_mixer(kind, n, features)
    q, k, v = jax.random.normal(jax.random.key(0), (3, batch, n, HEADS, DIM // HEADS))
    grad = jax.jit(jax.grad(lambda q, k, v: mixer(q, k, v).sum(), argnums=(0, 1, 2)))
    compiled = grad.lower(q, k, v).compile()
    return {
        "seconds": bench.median_seconds(lambda: compiled(q, k, v), repeats),
        "bytes": bench.compiled_bytes(compiled),
    }


def jax_layer(kind: str, batch: int, n: int, features: int, repeats: int) -> float:
    """Seconds of one fwd+bwd of our whole attention layer (projections + mixer)."""
    options = {"linformer": {"proj_len": features, "sharing": "headwise"}}.get(kind, {})
    layer = make_attention(kind, DIM, HEADS, max_len=n, options=options, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(layer, nnx.Param)
    x = jax.random.normal(jax.random.key(0), (batch, n, DIM))

    def loss(params, x):
        return nnx.merge(graphdef, params)(x).sum()

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return bench.median_seconds(lambda: grad(params, x), repeats)


def torch_peer(kind: str, batch: int, n: int, features: int, repeats: int) -> float | None:
    """Seconds of one fwd+bwd in PyTorch: SDPA, performer-pytorch or linformer; None if absent."""
    torch = torch_or_none()
    if torch is None:
        return None
    device = torch_device(torch)
    torch.manual_seed(0)
    if kind == "linformer-layer":
        try:
            from linformer import LinformerSelfAttention
        except ImportError:
            return None
        layer = LinformerSelfAttention(DIM, seq_len=n, k=features, heads=HEADS).to(device)
        x = torch.randn(batch, n, DIM, device=device, requires_grad=True)
        return torch_seconds(torch, lambda: layer(x).sum().backward(), repeats)
    q, k, v = (
        torch.randn(batch, HEADS, n, DIM // HEADS, device=device, requires_grad=True)
        for _ in range(3)
    )
    if kind == "sdpa":
        mixer = torch.nn.functional.scaled_dot_product_attention
    else:
        try:
            from performer_pytorch import FastAttention
        except ImportError:
            return None
        mixer = FastAttention(DIM // HEADS, nb_features=features).to(device)
    return torch_seconds(torch, lambda: mixer(q, k, v).sum().backward(), repeats)


def measure(batch: int, lengths: list[int], features: int, repeats: int, exact_up_to: int):
    rows = []
    for n in lengths:
        many = repeats if n <= 4096 else 1
        row = {"n": n}
        for kind in ("linformer", "performer", "blocked", "xla"):
            if kind in ("blocked", "xla") and n > exact_up_to:
                continue
            if kind == "xla" and n > 4096 and jax.default_backend() == "cpu":
                continue  # [B, H, N, N] float32 tensors of 4 GiB each: more than this RAM
            row[kind] = jax_mixer(kind, batch, n, features, many)
        row["sdpa"] = torch_peer("sdpa", batch, n, features, many)
        row["performer-pytorch"] = torch_peer("performer", batch, n, features, many)
        row["linformer-layer"] = jax_layer("linformer", batch, n, features, many)
        row["linformer-pytorch-layer"] = torch_peer("linformer-layer", batch, n, features, many)
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _ms(value) -> str:
    return "—" if value is None else f"{value * 1e3:.0f} ms"


def _line(row) -> str:
    parts = [f"N={row['n']}"]
    for key, value in row.items():
        if key != "n":
            parts.append(f"{key} {_ms(value['seconds'] if isinstance(value, dict) else value)}")
    return ", ".join(parts)


def targets(quick: bool) -> list[dict]:
    if quick:
        batch, lengths, features, repeats, exact_up_to = 1, [256], 16, 1, 256
    else:
        batch, lengths, features, repeats, exact_up_to = 4, [4096, 8192, 16384], 256, 3, 8192
    rows = measure(batch, lengths, features, repeats, exact_up_to)
    first = rows[0]
    n, out = first["n"], []
    ours, xla, sdpa = first["blocked"]["seconds"], first["xla"]["seconds"], first["sdpa"]
    shape = f"B={batch}, N={n}, D={DIM}, H={HEADS}"
    out.append(
        target(
            f"3. exact attention fwd+bwd vs PyTorch SDPA ({shape})",
            f"blocked {_ms(ours)}, XLA {_ms(xla)}, SDPA {_ms(sdpa)}: "
            + ("—" if sdpa is None else f"{ours / sdpa:.2f}×"),
            "≤ 1.0× SDPA",
            None if sdpa is None else [("time / SDPA's", ours / sdpa, "<=", 1.0)],
            peer=None if sdpa is None else "PyTorch SDPA",
            rows=rows,
        )
    )
    best = min(s for s in (ours, xla, sdpa) if s is not None)
    best_peer = "PyTorch SDPA" if best == sdpa else None  # "best exact" may be the peer's
    for kind, label in (("linformer", f"P={features}"), ("performer", f"M={features}")):
        mine = first[kind]
        memory = mine["bytes"] / first["xla"]["bytes"]
        out.append(
            target(
                f"4. {kind} ({label}) vs best exact, N={n}",
                f"{best / mine['seconds']:.1f}× faster; memory {memory:.2f}× of XLA exact, "
                f"{mine['bytes'] / first['blocked']['bytes']:.2f}× of blocked exact",
                "≥ 5.7× faster, memory ≤ 0.11×",
                [
                    ("speed-up", best / mine["seconds"], ">=", 5.7),
                    ("memory / XLA exact's", memory, "<=", 0.11),
                ],
                peer=best_peer,
            )
        )
    for row in rows[1:]:
        exact = [row[k]["seconds"] for k in ("blocked", "xla") if k in row] + [row["sdpa"]]
        best_n = min(s for s in exact if s is not None)
        out.append(
            target(
                f"4. N={row['n']}: Linformer / Performer vs best exact",
                f"{best_n / row['linformer']['seconds']:.1f}× / "
                f"{best_n / row['performer']['seconds']:.1f}× faster (exact {_ms(best_n)})",
                "reported",
                None,
                peer="PyTorch SDPA" if best_n == row["sdpa"] else None,
            )
        )
    peer = first["performer-pytorch"]
    out.append(
        target(
            f"6. Performer mixer vs performer-pytorch FastAttention ({shape}, M={features})",
            "peer not installed"
            if peer is None
            else f"{_ms(first['performer']['seconds'])} vs {_ms(peer)}: "
            f"{first['performer']['seconds'] / peer:.2f}×",
            "≤ 1.0×",
            None
            if peer is None
            else [("time / peer's", first["performer"]["seconds"] / peer, "<=", 1.0)],
            peer=None if peer is None else "performer-pytorch",
        )
    )
    peer = first["linformer-pytorch-layer"]
    mine = first["linformer-layer"]
    out.append(
        target(
            f"6. Linformer layer vs linformer LinformerSelfAttention ({shape}, P={features})",
            "peer not installed"
            if peer is None
            else f"{_ms(mine)} vs {_ms(peer)}: {mine / peer:.2f}×",
            "≤ 1.0×",
            None if peer is None else [("time / peer's", mine / peer, "<=", 1.0)],
            peer=None if peer is None else "linformer",
        )
    )
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    return common.main(targets, "attention", __doc__, argv)


if __name__ == "__main__":
    main()
