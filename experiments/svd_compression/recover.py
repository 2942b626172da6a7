"""Distillation recovery at half the FFN parameters, until validation stops improving, 3 seeds.

MiniLM's FFN factorized by whitened SVD at half its parameters (the best
allocation of ``budget.py``: uniform whitened, R = 153), then only the factors
train to bring each sentence's embedding back to the original model's (the
trainer's step with ``train.loss = distillation``, teacher ``self``). After every
epoch the validation loss (1 − cosine to the original, on reviews used nowhere
else) is measured; training stops when it has not improved for ``--patience``
epochs, and the best epoch's model is kept (model selection on validation, as
the trainer does). The seed sets the order of the distillation sentences. Each
seed's kept model is measured as ``run.py`` measures: mean and min cosine on the
held-out reviews, and the trec / reviews linear probes.

Two things make an epoch cheap. The teacher's embedding of every distillation
sentence is computed once (the batch carries it as ``target``, so the step
never runs the teacher; the loss is the same). Each epoch's random order is
sorted by length within windows of ``--window`` batches, the batches then
shuffled, so a batch pads little: reviews are 27 word pieces on average, and
a batch of 32 pads to about 60 in a random order, 38 window-sorted (measured on
the 6,000 sentences). Batches are then of sentences of similar length, still
in a random order of the seed's.

    python experiments/svd_compression/recover.py --workdir runs/svd_recovery
    python experiments/svd_compression/recover.py --quick  # tiny sizes, a minute (tests)

A seed runs up to 12 epochs of 6,000 sentences (each epoch's wall seconds,
validation and the first epoch's compilations included, are in its history). Writes
``results/recovery.json`` after every epoch (the running seed's curve, with each
epoch's held-out cosine, under ``running``) and every seed; with ``--workdir``
every epoch is checkpointed, and a stopped run goes on from its last finished epoch;
a rerun with a larger ``--max-epochs`` goes on from the checkpoints of a run that
the cap ended (any other changed setting is refused: its epochs would differ).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lowrank_jax import build, surgery
from lowrank_jax.config import load_module
from lowrank_jax.data import text
from lowrank_jax.models import pretrained
from lowrank_jax.train import sharding
from lowrank_jax.train.checkpoint import Checkpointer
from lowrank_jax.train.state import single_device_mesh, train_state

HERE = Path(__file__).parent
RUN = load_module(HERE / "run.py")


def _val_loss(model, tokenizer, sentences, reference) -> float:
    return float(
        np.mean(1.0 - np.sum(pretrained.embed(model, tokenizer, sentences) * reference, -1))
    )


def epoch_batches(rng, lengths: np.ndarray, batch_size: int, window: int) -> list[np.ndarray]:
    """One epoch's batches of sentence indices: a random order, sorted by length
    within windows of ``window`` batches (so a batch pads little), the batches
    then shuffled.

    Example:
      >>> lengths = np.array([5, 40, 6, 41, 7, 42, 8, 43])
      >>> batches = epoch_batches(np.random.default_rng(0), lengths, 2, 4)
      >>> sorted(sorted(lengths[b].tolist()) for b in batches)
      [[5, 6], [7, 8], [40, 41], [42, 43]]
    """
    order, size = rng.permutation(len(lengths)), batch_size * window
    batches = []
    for start in range(0, len(order), size):
        part = order[start : start + size]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def recover(
    student, config, tokenizer, train, val, val_reference, args, seed: int, on_epoch=None
) -> dict:
    """Epochs of distillation until ``patience`` epochs without a better validation loss.

    ``train`` is ``(sentences, targets)``: the teacher's embedding [S, D] of each
    distillation sentence, computed once (the metric is the cosine, so the
    normalised embedding serves). ``on_epoch(model, history)`` runs after every
    epoch, before its checkpoint; it may add fields to the epoch's entry
    (``history[-1]``), e.g. a held-out measure.

    With ``args.workdir`` every epoch is checkpointed in ``<workdir>/seed<N>`` (the
    state, the best epoch's state, the history and the order's random state, in one
    checkpoint), so a stopped run goes on from its last finished epoch, bit for bit.
    """
    assert config.train.distillation.metric == "cosine"  # the targets are normalised
    run = train_state(config, single_device_mesh(), student=student)
    state, rng = run.state, np.random.default_rng(seed)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "workdir")}
    sentences, targets = train
    lengths = np.array([len(e.ids) for e in tokenizer.encode_batch(sentences)])
    best_state = jax.tree.map(jnp.copy, state)  # the step donates state
    kept = Checkpointer(Path(args.workdir) / f"seed{seed}", keep=1) if args.workdir else None
    restored = kept.restore_latest({"state": state, "best": best_state}) if kept else None
    if restored is None:
        before = _val_loss(student, tokenizer, val, val_reference)
        history = [{"epoch": 0, "train_loss": None, "val_loss": before}]
    else:
        _, both, progress = restored
        if _run_of(progress.get("settings", settings)) != _run_of(settings):
            raise SystemExit(
                f"--workdir: {kept.directory} holds seed {seed} of a run with other settings "
                f"({progress['settings']}); use another --workdir"
            )
        state, best_state, history = both["state"], both["best"], progress["history"]
        rng.bit_generator.state = progress["rng"]
        print(f"seed {seed}: resuming after epoch {history[-1]['epoch']}")
    while len(history) <= args.max_epochs and (
        history[-1]["epoch"] - _best(history)["epoch"] < args.patience
    ):
        epoch, losses, began = len(history), [], time.perf_counter()
        for rows in epoch_batches(rng, lengths, config.train.batch_size, args.window):
            batch = next(pretrained.batches(tokenizer, [sentences[i] for i in rows], len(rows)))
            batch["target"] = targets[rows]
            placed = sharding.place_batch(batch, run.mesh, len(rows))
            state, metrics = run.train_step(state, placed)
            losses.append(float(metrics["loss"]))
        val_loss = _val_loss(run.merge(state), tokenizer, val, val_reference)
        seconds = time.perf_counter() - began
        history.append(
            {
                "epoch": epoch,
                "train_loss": float(np.mean(losses)),
                "val_loss": val_loss,
                "seconds": round(seconds, 1),
            }
        )
        if on_epoch:
            on_epoch(run.merge(state), history)
        held_out = history[-1].get("held_out_cosine")
        print(
            f"seed {seed} epoch {epoch}: train {np.mean(losses):.4f} val {val_loss:.4f}"
            + ("" if held_out is None else f" held-out cosine {held_out:.4f}"),
            flush=True,
        )
        if _best(history)["epoch"] == epoch:
            best_state = jax.tree.map(jnp.copy, state)  # the step donates state
        if kept:
            progress = {"history": history, "rng": rng.bit_generator.state, "settings": settings}
            kept.save(epoch, {"state": state, "best": best_state}, progress)
    if kept:
        kept.close()
    return {
        "model": run.merge(best_state),
        "best_epoch": _best(history)["epoch"],
        "history": history,
    }


def _run_of(settings: dict) -> dict:
    """The settings an epoch's result depends on: not ``max_epochs`` or ``patience``,
    which only decide when to stop, so a longer run goes on from a shorter one's
    checkpoints (older checkpoints hold no settings, and are taken as this run's)."""
    return {k: v for k, v in settings.items() if k not in ("max_epochs", "patience")}


def _best(history: list[dict]) -> dict:
    """The epoch with the lowest validation loss (the first, on a tie)."""
    return min(history, key=lambda epoch: epoch["val_loss"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--budget", type=float, default=0.5, help="of the FFN parameters")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-epochs", type=int, help="the cap (default 12; 2 with --quick)")
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--distill", type=int, default=6000, help="distillation sentences")
    parser.add_argument("--window", type=int, default=8, help="batches sorted by length together")
    parser.add_argument("--val", type=int, default=400, help="validation sentences")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam, constant (run.py's)")
    parser.add_argument("--sentences", type=int, default=200, help="held out; as many calibrate")
    parser.add_argument("--probe", type=int, default=1000, help="probe train (and test) size")
    parser.add_argument("--out", default=str(HERE / "results" / "recovery.json"))
    parser.add_argument("--workdir", help="checkpoint every epoch here (a stopped run goes on)")
    args = parser.parse_args(argv)
    args.max_epochs = args.max_epochs or (2 if args.quick else 12)
    if args.window < 1:
        parser.error(f"--window: must be a whole number of batches >= 1, got {args.window}")
    count, batch_size = args.sentences, 32
    if args.quick:
        count, batch_size, args.seeds = 16, 16, 2
        args.distill, args.val, args.probe = 32, 16, 32

    reviews, _ = text.read("reviews")
    order = np.random.default_rng(0).permutation(len(reviews))  # run.py's split, then further
    pick = [reviews[i] for i in order]
    held_out, calibration = pick[:count], pick[count : 2 * count]
    val = pick[2 * count : 2 * count + args.val]
    distill = pick[2 * count + args.val : 2 * count + args.val + args.distill]
    pattern = RUN.TARGETS["ffn"]
    config = RUN.minilm_config(lr=args.lr, trainable=pattern + r"\..*", batch_size=batch_size)
    original = build.model(config.model, rngs=build.run_rngs(config.seed))
    tokenizer = pretrained.tokenizer_from(pretrained.model_dir(RUN.MODEL))
    reference = pretrained.embed(original, tokenizer, held_out)
    val_reference = pretrained.embed(original, tokenizer, val)
    train = distill, pretrained.embed(original, tokenizer, distill)  # the teacher's, once
    probes = RUN.Probes(args.probe)
    out = Path(args.out)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "workdir")}
    result = {"settings": settings, "seeds": []}
    if not args.quick and out.exists():
        kept = json.loads(out.read_text())
        if kept["settings"] == result["settings"]:
            result = kept  # a stopped run: the seeds it finished stay
    if "original" not in result:
        result["original"] = probes(original, tokenizer)
    for seed in range(len(result["seeds"]), args.seeds):
        model = build.model(config.model, rngs=build.run_rngs(config.seed))
        model.eval()
        cal = list(pretrained.batches(tokenizer, calibration, 32))
        surgery.factorize(model, pattern, budget=args.budget, calibration=cal)
        ranks = sorted(set(surgery.ranks(model).values()))
        before = np.sum(pretrained.embed(model, tokenizer, held_out) * reference, axis=-1)

        def on_epoch(model, history, seed=seed, before=before):
            """The held-out cosine of every epoch (reported, never used to select), and
            the seed's progress in the results file: a run stopped mid-seed leaves its
            curve there (``running``), and the finished seed replaces it."""
            cosine = np.sum(pretrained.embed(model, tokenizer, held_out) * reference, -1)
            history[-1]["held_out_cosine"] = float(cosine.mean())
            if not args.quick:
                result["running"] = {
                    "seed": seed,
                    "mean_cosine_before": float(before.mean()),
                    "history": history,
                }
                out.write_text(json.dumps(result, indent=1) + "\n")

        done = recover(model, config, tokenizer, train, val, val_reference, args, seed, on_epoch)
        cosine = np.sum(pretrained.embed(done["model"], tokenizer, held_out) * reference, -1)
        result["seeds"].append(
            {
                "seed": seed,
                "ranks": ranks,
                "params_kept": RUN.target_params(done["model"], "ffn")
                / RUN.target_params(original, "ffn"),
                "mean_cosine_before": float(before.mean()),
                "mean_cosine": float(cosine.mean()),
                "min_cosine": float(cosine.min()),
                "best_epoch": done["best_epoch"],
                "history": done["history"],
                **probes(done["model"], tokenizer),
            }
        )
        result.pop("running", None)
        print(json.dumps({k: v for k, v in result["seeds"][-1].items() if k != "history"}))
        if not args.quick:
            out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
