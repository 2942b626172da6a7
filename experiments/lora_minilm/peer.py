"""The peer beside ours: the same MiniLM fine-tuning in PyTorch (transformers + peft).

Both sides train all-MiniLM-L6-v2 with a new mean-pooling linear head on the
same train / validation / test split of a task, the same WordPiece ids (our
tokenizer, truncated at N = 64), batch 32, the same number of steps (3 epochs),
AdamW (b1 0.9, b2 0.999, eps 1e-8, weight decay 0.01 on matrices only), global
gradient-norm clipping at 1, linear warm-up then cosine decay to 0, hidden and
attention dropout 0.1, validation on the whole split after every epoch with the
best epoch scored once on the whole test split. The rows are
``configs/lora_minilm.py``'s ``PEER_POINTS`` (full fine-tuning at 2e-5; LoRA R = 8
on W_q, W_v with alpha 8 and 16, and on every linear layer, at 5e-4). What
differs: the framework, each side's own random streams (initialisation of the
head and LoRA's A, data order, dropout), and padding: the peer pads each batch
to its longest sentence (what peft users do), ours pads every batch to N = 64.

    lowrank-jax sweep --config configs/lora_minilm.py:task=trec,peer --seeds 3 \\
        --workdir runs/lora_minilm_peer_trec                        # ours
    python experiments/lora_minilm/peer.py --task trec --seeds 3 \\
        --workdir runs/lora_minilm_peer_trec/peft                  # the peer
    python experiments/lora_minilm/peer.py --task trec --table \\
        --workdir runs/lora_minilm_peer_trec/peft --ours runs/lora_minilm_peer_trec

Each peer run writes ``<workdir>/<method>,seed=<n>.json``; a rerun skips the
finished ones. ``--table`` writes ``results/peer_<task>.json`` (both sides per
method: mean, 95% interval, n; step times; trainable parameters).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from lowrank_jax.config import load_module
from lowrank_jax.data import pipeline
from lowrank_jax.models import pretrained
from lowrank_jax.report import interval, point_of, read_runs
from lowrank_jax.sweep import apply_point, point_name

HERE = Path(__file__).parent
CONFIG = HERE.parents[1] / "configs" / "lora_minilm.py"
# peft's names for our targets: BertModel's linear layers (W_q, W_v / every linear layer)
PEFT_TARGETS = {
    r"layers\.\d+\.attention\.(query|value)": ["query", "value"],
    r"layers\.\d+\.(attention\.(query|key|value|out)|ffn\.(up|down))": (
        r".*encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
        r"|intermediate\.dense|output\.dense)"
    ),
}


def config_of(task: str, method: str, steps: int = 0):
    """Our run's config for ``method`` (the one both sides follow); ``steps`` > 0 shortens it."""
    module = load_module(CONFIG)
    config = apply_point(module.get_config(f"task={task},peer"), module.PEER_POINTS[method])
    if steps:
        config.train.update(steps=steps, eval_every=steps, warmup_steps=1)
    return config


def arrays(data_config, split: str) -> dict[str, np.ndarray]:
    """A split as our pipeline featurizes it: tokens and mask [n, N], labels [n]."""
    size, example = pipeline.split_examples(data_config, split)
    examples = [example(i) for i in range(size)]
    return {key: np.stack([e[key] for e in examples]) for key in ("tokens", "mask", "label")}


def schedule(config, step: int) -> float:
    """Our ``step.make_schedule`` (linear warm-up, cosine to 0) as a factor of the peak."""
    warmup, steps = max(config.train.warmup_steps, 1), config.train.steps
    if step < warmup:
        return step / warmup
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, steps - warmup) / (steps - warmup)))


def run(task: str, method: str, seed: int, threads: int, steps: int = 0) -> dict:
    """One peer run: train, select the best epoch on validation, score it on test."""
    import peft
    import torch
    import transformers

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    config = config_of(task, method, steps)
    data = {split: arrays(config.data, split) for split in ("train", "validation", "test")}
    folder = str(pretrained.model_dir("all-MiniLM-L6-v2"))
    encoder = transformers.AutoModel.from_pretrained(folder, add_pooling_layer=False)
    lora = config.model.lora
    if lora.rank:
        encoder = peft.get_peft_model(
            encoder,
            peft.LoraConfig(
                r=lora.rank,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=PEFT_TARGETS[lora.targets],
                bias="none",
            ),
        )
    head = torch.nn.Linear(encoder.config.hidden_size, config.model.num_classes)
    trainable = [p for p in [*encoder.parameters(), *head.parameters()] if p.requires_grad]
    train = config.train
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": train.weight_decay},
            {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=train.learning_rate,
        betas=(train.b1, train.b2),
        eps=1e-8,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule(config, s))

    def logits(tokens: np.ndarray, mask: np.ndarray):
        longest = int(mask.sum(1).max())  # dynamic padding: the batch's longest sentence
        ids = torch.from_numpy(tokens[:, :longest].astype(np.int64))
        attention = torch.from_numpy(mask[:, :longest].astype(np.int64))
        hidden = encoder(input_ids=ids, attention_mask=attention).last_hidden_state
        weights = attention.unsqueeze(-1).float()
        return head((hidden * weights).sum(1) / weights.sum(1))

    def accuracy(split: str) -> float:
        encoder.eval()
        head.eval()
        part, correct = data[split], 0
        with torch.no_grad():
            for start in range(0, len(part["label"]), 64):
                rows = slice(start, start + 64)
                predicted = logits(part["tokens"][rows], part["mask"][rows]).argmax(-1).numpy()
                correct += int((predicted == part["label"][rows]).sum())
        encoder.train()
        head.train()
        return correct / len(part["label"])

    def trainable_state() -> list:
        return [p.detach().clone() for p in trainable]

    encoder.train()
    head.train()
    generator = torch.Generator().manual_seed(seed)
    size, batch = len(data["train"]["label"]), train.batch_size
    order, at, times, vals = [], 0, [], []
    best = (-1.0, 0, None)
    for step in range(1, train.steps + 1):
        if at + batch > len(order):  # a new epoch: a new order, the remainder dropped
            order, at = torch.randperm(size, generator=generator).numpy(), 0
        rows = order[at : at + batch]
        at += batch
        began = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(
            logits(data["train"]["tokens"][rows], data["train"]["mask"][rows]),
            torch.from_numpy(data["train"]["label"][rows].astype(np.int64)),
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, train.grad_clip)
        optimizer.step()
        scheduler.step()
        times.append(time.perf_counter() - began)
        if step % train.eval_every == 0 or step == train.steps:
            vals.append((step, accuracy("validation")))
            if vals[-1][1] > best[0]:  # ties keep the earlier, as ours
                best = (vals[-1][1], step, trainable_state())
    final_test = accuracy("test")
    with torch.no_grad():
        for parameter, value in zip(trainable, best[2], strict=True):
            parameter.copy_(value)
    test = accuracy("test") if best[1] != train.steps else final_test
    return {
        "task": task,
        "method": method,
        "seed": seed,
        "steps": train.steps,
        "val_accuracy": vals,
        "best_step": best[1],
        "best_val_accuracy": best[0],
        "test_accuracy": test,
        "final_test_accuracy": final_test,
        "median_step_time_s": statistics.median(times[1:]) if len(times) > 1 else times[0],
        "params_trainable": sum(p.numel() for p in trainable),
        "padding": "dynamic (each batch to its longest sentence, at most N)",
        "threads": threads,
        "versions": {"torch": torch.__version__, "peft": peft.__version__},
    }


def table(task: str, peer_dir: Path, ours_dir: Path) -> dict:
    """Both sides per method: test accuracy (mean, 95% interval, n), step time, parameters."""
    module = load_module(CONFIG)
    names = {point_name(point): method for method, point in module.PEER_POINTS.items()}
    ours: dict[str, list[dict]] = {}
    for row in read_runs(ours_dir):
        if row["status"] == "done" and point_of(row["name"]) in names:
            ours.setdefault(names[point_of(row["name"])], []).append(row)
    theirs: dict[str, list[dict]] = {}
    for path in sorted(peer_dir.glob("*,seed=*.json")):
        record = json.loads(path.read_text())
        theirs.setdefault(record["method"], []).append(record)
    result = {}
    for method in module.PEER_POINTS:
        mine, peer = ours.get(method, []), theirs.get(method, [])
        result[method] = {"ours": _side(mine), "peft": _side(peer)}
    return {"task": task, "methods": result}


def _side(runs: list[dict]) -> dict:
    """One side's row: test accuracy (mean, 95% interval, n), median step time, parameters."""
    if not runs:
        return {"test_accuracy": None, "median_step_time_s": None, "params_trainable": None}
    return {
        "test_accuracy": interval([r["test_accuracy"] for r in runs]),
        "median_step_time_s": statistics.median(r["median_step_time_s"] for r in runs),
        "params_trainable": runs[0]["params_trainable"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="trec", choices=("trec", "reviews"))
    parser.add_argument("--workdir", required=True, help="where the peer's run records go")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", default="full,lora_qv_alpha8,lora_qv_alpha16,lora_all_alpha16")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the cores)")
    parser.add_argument("--table", action="store_true", help="write the table from finished runs")
    parser.add_argument("--ours", help="our sweep directory (with --table)")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--steps", type=int, default=0, help="shorter runs (the quick form)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    if args.table:
        record = table(args.task, workdir, Path(args.ours))
        out = Path(args.out) / f"peer_{args.task}.json"
        out.write_text(json.dumps(record, indent=1) + "\n")
        print(json.dumps(record, indent=1))
        return
    workdir.mkdir(parents=True, exist_ok=True)
    for method in args.methods.split(","):
        for seed in range(args.seeds):
            path = workdir / f"{method},seed={seed}.json"
            if path.exists():
                continue
            began = time.perf_counter()
            record = run(args.task, method, seed, args.threads, args.steps)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=1) + "\n")
            tmp.replace(path)
            print(
                f"{method} seed {seed}: test {record['test_accuracy']:.4f} "
                f"({time.perf_counter() - began:.0f} s)",
                file=sys.stderr,
                flush=True,
            )


if __name__ == "__main__":
    main()
