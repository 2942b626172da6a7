"""The main job (`make demo`): a LoRA rank sweep on real data, 3 seeds, with intervals.

    lowrank-jax sweep --config configs/demo.py --seeds 3 --workdir runs/demo --jobs 2
    lowrank-jax report runs/demo

all-MiniLM-L6-v2 (real weights, shipped offline) with LoRA of rank R on W_q, W_v
and a new linear head, fine-tuned on TREC question classification (real
questions, 6 classes; 4,457 train / 495 validation / 500 test) at CPU scale:
150 steps of batch 16 on inputs of 32 word pieces. Only the LoRA factors and
the head train (peft's recipe, LoRA paper Section 4). Points: R = 1, 4, 32.
Each run keeps its best checkpoint on validation and scores it on the whole
test split, so the report's test accuracy is a mean over 3 seeds with its 95%
interval; the LoRA paper's Table 6 question is the same: how much does the
rank buy? (Reproduces no table: the LoRA experiments are ``experiments/lora_*``.)

Args: ``ranks`` (e.g. ``1+4+32``), ``steps``.
"""

from pathlib import Path

from lowrank_jax.config import load_config, parse_arg


def _args(arg):
    return parse_arg(arg, ranks="1+4+32", steps=150)


def get_config(arg=None):
    args = _args(arg)
    # LoRA on W_q, W_v (rank 8 until a point sets it), the head, trec, CPU scale
    config = load_config(f"{Path(__file__).with_name('lora_minilm.py')}:task=trec,runlocal")
    config.data.max_len = 32  # TREC questions: a dozen word pieces, a few up to ~30
    config.train.update(
        steps=args.steps,
        warmup_steps=15,
        log_every=25,
        eval_every=50,  # three validation evaluations pick the best checkpoint
        eval_batches=0,  # the whole validation split (495 questions) each time
        train_eval_batches=16,  # the selected model on 256 training questions
        checkpoint_every=50,
    )
    return config


def get_sweep(arg=None):
    ranks = [int(r) for r in _args(arg).ranks.split("+")]
    return [{"model.lora.rank": r, "model.lora.alpha": float(2 * r)} for r in ranks]
