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
to its longest sentence (what peft users do), ours cuts each batch to the
smallest of the length buckets 16, 32, 64 that holds it (``data.buckets``).

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
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from lowrank_jax.config import load_module
from lowrank_jax.data import buckets, pipeline
from lowrank_jax.models import pretrained
from lowrank_jax.sweeps.launch import apply_point, point_name
from lowrank_jax.sweeps.report import point_of, read_runs
from lowrank_jax.sweeps.stats import interval
from lowrank_jax.train.state import single_device_mesh, train_state

HERE = Path(__file__).parent
FINE = 8  # --epoch also times ours in buckets of every FINE word pieces
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


class Peer:
    """The peer's model for a config: MiniLM (+ peft LoRA), a mean-pooling head, AdamW.

    ``step(tokens, mask, labels, dynamic=True)`` is one training step; with
    ``dynamic`` the batch is cut to its longest sentence (peft users' padding),
    else it keeps our fixed N.
    """

    def __init__(self, config):
        import peft
        import torch
        import transformers

        self.torch = torch
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
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.hidden_size, config.model.num_classes)
        parameters = [*encoder.parameters(), *self.head.parameters()]
        self.trainable = [p for p in parameters if p.requires_grad]
        train = config.train
        self.clip = train.grad_clip
        self.optimizer = torch.optim.AdamW(
            [
                {
                    "params": [p for p in self.trainable if p.ndim >= 2],
                    "weight_decay": train.weight_decay,
                },
                {"params": [p for p in self.trainable if p.ndim < 2], "weight_decay": 0.0},
            ],
            lr=train.learning_rate,
            betas=(train.b1, train.b2),
            eps=1e-8,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: schedule(config, s)
        )
        self.train(True)

    def train(self, mode: bool) -> None:
        self.encoder.train(mode)
        self.head.train(mode)

    def logits(self, tokens: np.ndarray, mask: np.ndarray, dynamic: bool = True):
        torch = self.torch
        longest = int(mask.sum(1).max()) if dynamic else mask.shape[1]
        ids = torch.from_numpy(tokens[:, :longest].astype(np.int64))
        attention = torch.from_numpy(mask[:, :longest].astype(np.int64))
        hidden = self.encoder(input_ids=ids, attention_mask=attention).last_hidden_state
        weights = attention.unsqueeze(-1).float()
        return self.head((hidden * weights).sum(1) / weights.sum(1))

    def step(self, tokens, mask, labels, dynamic: bool = True) -> None:
        torch = self.torch
        loss = torch.nn.functional.cross_entropy(
            self.logits(tokens, mask, dynamic), torch.from_numpy(labels.astype(np.int64))
        )
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, self.clip)
        self.optimizer.step()
        self.scheduler.step()


def run(task: str, method: str, seed: int, threads: int, steps: int = 0) -> dict:
    """One peer run: train, select the best epoch on validation, score it on test."""
    import peft
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    config = config_of(task, method, steps)
    data = {split: arrays(config.data, split) for split in ("train", "validation", "test")}
    peer = Peer(config)
    trainable, train = peer.trainable, config.train

    def accuracy(split: str) -> float:
        peer.train(False)
        part, correct = data[split], 0
        with torch.no_grad():
            for start in range(0, len(part["label"]), 64):
                rows = slice(start, start + 64)
                predicted = peer.logits(part["tokens"][rows], part["mask"][rows]).argmax(-1)
                correct += int((predicted.numpy() == part["label"][rows]).sum())
        peer.train(True)
        return correct / len(part["label"])

    def trainable_state() -> list:
        return [p.detach().clone() for p in trainable]

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
        peer.step(*(data["train"][key][rows] for key in ("tokens", "mask", "label")))
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


def time_steps(
    task: str, methods: list[str], threads: int, count: int, rounds: int, sides=None
) -> dict:
    """Each side's training step on the same ``count`` training batches (the record keeps
    the machine's load averages before and after, ``load``).

    Ours: the trainer's jitted step (``train_state``) at our fixed N, and
    with length buckets (each batch cut to the smallest of ``data.buckets`` that
    holds it, as the data pipeline does); the peer's: its step with dynamic padding (what
    it trains with) and padded to our N (what padding costs it). ``rounds``
    alternate the sides, so a slow minute hits every side; each figure is the
    median over its timed steps (a first step on a spare batch, which compiles
    or warms up, and one per bucket length, are not timed). ``sides``: a subset
    of ours, ours_buckets, peft_dynamic, peft_fixed, peft_buckets (the peer on
    our bucketed batches: the same shapes on both sides) and ours_fine (ours in
    buckets every ``FINE`` word pieces) (default the first four).
    """
    import torch

    torch.set_num_threads(threads)
    load_before = list(os.getloadavg())
    methods_times = {
        method: _time_method(config_of(task, method), count, rounds, sides) for method in methods
    }
    return {
        "threads": threads,
        "batches": count,
        "rounds": rounds,
        "methods": methods_times,
        "load": {"before": load_before, "after": list(os.getloadavg())},
    }


def _time_method(config, count: int, rounds: int, only=None) -> dict:
    import jax

    from lowrank_jax.train import sharding

    data, size = arrays(config.data, "train"), config.train.batch_size
    order = np.random.default_rng(0).permutation(len(data["label"]))[: (count + 1) * size]
    batches = [
        {key: value[order[i * size : (i + 1) * size]] for key, value in data.items()}
        for i in range(count + 1)
    ]
    run = train_state(config, single_device_mesh())
    state = {"now": run.state}
    placed = [sharding.place_batch(b, run.mesh, size) for b in batches]
    lengths = tuple(config.data.buckets)
    cut = [buckets.trim(b, lengths, config.data.max_len) for b in batches]
    placed_cut = [sharding.place_batch(b, run.mesh, size) for b in cut]
    fine = tuple(range(FINE, config.data.max_len, FINE))  # and max_len
    cut_fine = [buckets.trim(b, fine, config.data.max_len) for b in batches]
    placed_fine = [sharding.place_batch(b, run.mesh, size) for b in cut_fine]
    peer = Peer(config)

    def ours(i: int, batches=placed) -> None:
        state["now"], metrics = run.train_step(state["now"], batches[i])
        jax.block_until_ready(metrics)

    def theirs(i: int, dynamic: bool, batches=batches) -> None:
        peer.step(*(batches[i][k] for k in ("tokens", "mask", "label")), dynamic=dynamic)

    sides = {
        "ours": ours,
        "ours_buckets": lambda i: ours(i, placed_cut),
        "ours_fine": lambda i: ours(i, placed_fine),  # buckets every FINE word pieces
        "peft_dynamic": lambda i: theirs(i, True),
        "peft_fixed": lambda i: theirs(i, False),
        "peft_buckets": lambda i: theirs(i, False, cut),  # our shapes: the frameworks alone
    }
    only = only or ("ours", "ours_buckets", "peft_dynamic", "peft_fixed")
    sides = {name: side for name, side in sides.items() if name in only}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for side in sides.values():
        side(count)  # the warm-up (and our compilation) on the spare batch
    for cuts, placed_cuts in [(cut, placed_cut)] + [(cut_fine, placed_fine)] * (
        "ours_fine" in sides
    ):
        first_of = {b["tokens"].shape[1]: i for i, b in enumerate(cuts)}
        for i in first_of.values():  # every bucket length compiled before timing
            ours(i, placed_cuts)
    for _ in range(rounds):
        for name, side in sides.items():
            for i in range(count):
                began = time.perf_counter()
                side(i)
                times[name].append(time.perf_counter() - began)
    record = {
        **{f"{name}_s": statistics.median(t) for name, t in times.items()},
        # each round's median, for the spread of the ratios across rounds
        **{
            f"{name}_rounds_s": [
                statistics.median(t[r * count : (r + 1) * count]) for r in range(rounds)
            ]
            for name, t in times.items()
        },
        # the whole of the timed steps (with --epoch: one epoch, compilation excluded)
        **{f"{name}_total_s": sum(t) / rounds for name, t in times.items()},
        "fixed_length": int(config.data.max_len),
        "mean_longest": float(np.mean([b["mask"].sum(1).max() for b in batches[:count]])),
        "buckets": list(lengths),
        "mean_bucket": float(np.mean([b["tokens"].shape[1] for b in cut[:count]])),
        "fine_buckets": [*fine, int(config.data.max_len)],
        "mean_fine_bucket": float(np.mean([b["tokens"].shape[1] for b in cut_fine[:count]])),
    }
    print(json.dumps(record), file=sys.stderr, flush=True)
    return record


def table(task: str, peer_dir: Path, ours_dir: Path, steps: Path | None = None) -> dict:
    """Both sides per method: test accuracy (mean, 95% interval, n), the epoch each run's
    model was selected at, trainable parameters, and the step times of ``steps``
    (``--time``'s file, measured on a quiet machine) when given."""
    module = load_module(CONFIG)
    names = {point_name(point): method for method, point in module.PEER_POINTS.items()}
    train = config_of(task, "full").train
    epoch = train.eval_every
    ours: dict[str, list[dict]] = {}
    for row in read_runs(ours_dir):
        if row["status"] == "done" and point_of(row["name"]) in names:
            best = max(row["curve"], key=lambda point: point[1])[0]  # the first best
            ours.setdefault(names[point_of(row["name"])], []).append({**row, "best_step": best})
    theirs: dict[str, list[dict]] = {}
    for path in sorted(peer_dir.glob("*,seed=*.json")):
        record = json.loads(path.read_text())
        theirs.setdefault(record["method"], []).append(record)
    timed = json.loads(steps.read_text())["methods"] if steps and steps.exists() else {}
    result = {}
    for method in module.PEER_POINTS:
        mine, peer = ours.get(method, []), theirs.get(method, [])
        result[method] = {
            "ours": _side(mine, epoch),
            "peft": _side(peer, epoch),
            "step_s": timed.get(method),
        }
    return {"task": task, "epoch_steps": epoch, "epochs": train.steps // epoch, "methods": result}


def _side(runs: list[dict], epoch: int) -> dict:
    """One side's row: test accuracy (mean, 95% interval, n), best epochs, parameters."""
    if not runs:
        return {"test_accuracy": None, "best_epochs": [], "params_trainable": None}
    return {
        "test_accuracy": interval([r["test_accuracy"] for r in runs]),
        "best_epochs": [-(-r["best_step"] // epoch) for r in runs],
        "params_trainable": runs[0]["params_trainable"],
        # the training runs' own median step (the machine was shared: see step_s)
        "median_step_time_s": statistics.median(r["median_step_time_s"] for r in runs),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="trec", choices=("trec", "reviews"))
    parser.add_argument("--workdir", help="where the peer's run records go")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", default="full,lora_qv_alpha8,lora_qv_alpha16,lora_all_alpha16")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the cores)")
    parser.add_argument("--table", action="store_true", help="write the table from finished runs")
    parser.add_argument("--ours", help="our sweep directory (with --table)")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--steps", type=int, default=0, help="shorter runs (the quick form)")
    parser.add_argument(
        "--time",
        type=int,
        default=0,
        metavar="BATCHES",
        help="only time both sides' steps on BATCHES same batches (quiet machine); "
        "writes results/peer_<task>_steps.json",
    )
    parser.add_argument("--rounds", type=int, default=2, help="with --time")
    parser.add_argument(
        "--epoch",
        action="store_true",
        help="time one whole training epoch, ours in length buckets (the config's, and every "
        f"{FINE} word pieces) against peft's dynamic padding and peft on our buckets, same "
        "batches (quiet machine); writes results/peer_<task>_epoch.json",
    )
    args = parser.parse_args(argv)
    if args.epoch:
        size = config_of(args.task, "full").train.batch_size
        batches = pipeline.split_examples(config_of(args.task, "full").data, "train")[0] // size
        record = time_steps(
            args.task,
            args.methods.split(","),
            args.threads,
            batches - 1,
            1,
            sides=("ours_buckets", "ours_fine", "peft_dynamic", "peft_buckets"),
        )
        out = Path(args.out) / f"peer_{args.task}_epoch.json"
        out.write_text(json.dumps(record, indent=1) + "\n")
        return
    if args.time:
        record = time_steps(
            args.task, args.methods.split(","), args.threads, args.time, args.rounds
        )
        out = Path(args.out) / f"peer_{args.task}_steps.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1) + "\n")
        return
    workdir = Path(args.workdir)
    if args.table:
        steps = Path(args.out) / f"peer_{args.task}_steps.json"
        record = table(args.task, workdir, Path(args.ours), steps)
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
