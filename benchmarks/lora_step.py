"""MiniLM fine-tuning steps: LoRA (R = 8 on W_q, W_v) vs full, ours and Hugging Face peft's.

Targets:
  5. our LoRA step at most 0.75x our full fine-tuning step; LoRA's optimizer
     state at most 1% of full's;
  6. our steps against transformers + peft on PyTorch at the same shapes
     (B = 32, N = 128), on our device: ours at most 1.0x their time;
  9. DoRA's cost, its step against LoRA's (both R = 8 on W_q, W_v), ours and
     peft's (``use_dora=True``), reported (peft users measure 1.2-2x LoRA's).
     Results files written before the suite's own numbering call it 18
     (``tables.RENUMBERED`` pairs them).

Both sides: all-MiniLM-L6-v2's architecture (6 layers, 384 wide, 12 heads),
a 2-class head on the mean-pooled output, cross-entropy, AdamW, random tokens
with every position real. Ours is the trainer's own jitted step
(``bench.EncoderStep``); theirs is ``BertModel`` (eager, SDPA attention) with
``loss.backward(); optimizer.step(); optimizer.zero_grad()``.

    python benchmarks/lora_step.py            # B = 32, N = 128
    python benchmarks/lora_step.py --quick    # B = 2, N = 16
"""

from __future__ import annotations

import common
from common import target, torch_device, torch_or_none, torch_seconds

from lowrank_jax import bench
from lowrank_jax.config import train_defaults
from lowrank_jax.models import pretrained

NAME = "all-MiniLM-L6-v2"
TARGETS = r"layers\.\d+\.attention\.(query|value)"
LORA_TRAINABLE = r".*(lora_[ab]|magnitude)|head\..*"


def ours(method: str, batch: int, length: int, repeats: int) -> dict:
    model = pretrained.config_of(NAME, num_classes=2)
    model.update(max_len=512, pooling="mean")
    train = train_defaults().train
    if method in ("lora", "dora"):
        model.lora.update(rank=8, alpha=16.0, targets=TARGETS, variant=method)
        train.trainable = LORA_TRAINABLE
    else:
        train.trainable = "all"
    step = bench.EncoderStep(model, train, batch, length)
    # the products with a frozen (non-LoRA) weight's shape: full's are real weight gradients
    frozen = bench.frozen_weight_products(step.compiled, step.model, LORA_TRAINABLE)
    return {
        "seconds": step.seconds(repeats),
        "optimizer_bytes": step.optimizer_bytes,
        "frozen_products": len(frozen),
    }


def peft_seconds(method: str, batch: int, length: int, repeats: int) -> float | None:
    """transformers' BertModel (+ peft LoRA or DoRA) step on our device kind, None without them."""
    torch = torch_or_none()
    try:
        import transformers
    except ImportError:
        return None
    device = torch_device(torch)
    torch.manual_seed(0)
    encoder = transformers.AutoModel.from_pretrained(str(pretrained.model_dir(NAME)))
    if method in ("lora", "dora"):
        try:
            import peft
        except ImportError:
            return None
        config = peft.LoraConfig(
            r=8, lora_alpha=16, target_modules=["query", "value"], use_dora=method == "dora"
        )
        encoder = peft.get_peft_model(encoder, config)
    encoder.train().to(device)
    head = torch.nn.Linear(encoder.config.hidden_size, 2).to(device)
    trainable = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    tokens = torch.randint(1, encoder.config.vocab_size, (batch, length), device=device)
    mask = torch.ones(batch, length, dtype=torch.long, device=device)
    labels = torch.randint(0, 2, (batch,), device=device)

    def run():
        hidden = encoder(input_ids=tokens, attention_mask=mask).last_hidden_state
        loss = torch.nn.functional.cross_entropy(head(hidden.mean(1)), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return torch_seconds(torch, run, repeats)


def targets(quick: bool) -> list[dict]:
    batch, length, repeats = (2, 16, 2) if quick else (32, 128, 5)
    try:
        pretrained.model_dir(NAME)
    except ImportError as missing:  # e.g. a lent GPU machine without the weights' package
        return [target("5, 6, 9. MiniLM fine-tuning steps", f"not run: {missing}", "—", None)]
    methods = ("full", "lora", "dora")
    mine = {m: ours(m, batch, length, repeats) for m in methods}
    theirs = {m: peft_seconds(m, batch, length, repeats) for m in methods}
    for m in mine:
        print(
            f"{m}: ours {mine[m]['seconds'] * 1e3:.0f} ms, peft/torch "
            f"{'—' if theirs[m] is None else f'{theirs[m] * 1e3:.0f} ms'}",
            flush=True,
        )
    step_ratio = mine["lora"]["seconds"] / mine["full"]["seconds"]
    state_ratio = mine["lora"]["optimizer_bytes"] / mine["full"]["optimizer_bytes"]
    shape = f"B={batch}, N={length}"
    rows = [
        target(
            f"5. MiniLM LoRA R=8 (W_q, W_v) step vs full fine-tuning ({shape})",
            f"{mine['lora']['seconds'] * 1e3:.0f} vs {mine['full']['seconds'] * 1e3:.0f} ms: "
            f"{step_ratio:.2f}×",
            "≤ 0.75×",
            [("LoRA step / full's", step_ratio, "<=", 0.75)],
        ),
        target(
            "5. LoRA optimizer state vs full",
            f"{mine['lora']['optimizer_bytes'] / 2**20:.2f} vs "
            f"{mine['full']['optimizer_bytes'] / 2**20:.1f} MiB: {state_ratio:.2%}",
            "≤ 1%",
            [("LoRA state / full's", state_ratio, "<=", 0.01)],
        ),
    ]
    rows.append(
        target(
            "5. compiled LoRA step: products with a frozen weight's shape (weight gradients)",
            f"LoRA {mine['lora']['frozen_products']}, full fine-tuning "
            f"{mine['full']['frozen_products']} (the control)",
            "≤ 0 (none in LoRA's step)",
            [("frozen weight products", mine["lora"]["frozen_products"], "<=", 0)],
        )
    )
    dora = mine["dora"]["seconds"] / mine["lora"]["seconds"]
    peer = None if None in (theirs["dora"], theirs["lora"]) else theirs["dora"] / theirs["lora"]
    rows.append(
        target(
            f"9. MiniLM DoRA R=8 (W_q, W_v) step vs LoRA's ({shape})",
            f"ours {mine['dora']['seconds'] * 1e3:.0f} vs {mine['lora']['seconds'] * 1e3:.0f} ms: "
            f"{dora:.2f}×; peft " + ("not installed" if peer is None else f"{peer:.2f}×"),
            "reported (peft users: 1.2–2×)",
            None,
        )
    )
    for method in ("full", "lora"):
        peer = theirs[method]
        seconds = mine[method]["seconds"]
        rows.append(
            target(
                f"6. MiniLM {method} step: ours vs transformers{' + peft' * (method == 'lora')} "
                f"({shape})",
                "peer not installed"
                if peer is None
                else f"{seconds * 1e3:.0f} vs {peer * 1e3:.0f} ms: {seconds / peer:.2f}×",
                "≤ 1.0×",
                None if peer is None else [("time / peer's", seconds / peer, "<=", 1.0)],
                peer=None if peer is None else "transformers",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    return common.main(targets, "MiniLM fine-tuning step", __doc__, argv)


if __name__ == "__main__":
    main()
