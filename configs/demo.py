"""The main job (`make demo`): a LoRA rank sweep on real data, 3 seeds, with intervals.

    lowrank-jax sweep --config configs/demo.py --seeds 3 --workdir runs/demo --jobs 2
    lowrank-jax report runs/demo

all-MiniLM-L6-v2 (real weights, shipped offline) with LoRA of rank R on W_q, W_v
and a new linear head, fine-tuned on TREC question classification (real
questions, 6 classes; 4,457 train / 495 validation / 500 test) at CPU scale:
300 AdamW steps of batch 16 (about one epoch) on the first 16 word pieces of
each question, learning rate 2e-3 with 30 warm-up steps and cosine decay, the
whole validation split scored every 25 steps. Only the LoRA factors and the
head train (peft's recipe, LoRA paper Section 4). Points: R = 1, 4, 32. Each
run keeps its best checkpoint on validation and scores it on the whole test
split, so the report's test accuracy is a mean over 3 seeds with its 95%
interval, and the report checks that every point's runs kept a best before
their last evaluation (it warns "still improving" otherwise). The LoRA paper's
Table 6 question is the same: how much does the rank buy? (Reproduces no table:
the LoRA experiments are ``experiments/lora_*``.)

Args: ``ranks`` (e.g. ``1+4+32``), ``steps``.
"""

from pathlib import Path

from lowrank_jax.config import load_config, parse_arg


def _args(arg):
    return parse_arg(arg, ranks="1+4+32", steps=300)


def get_config(arg=None):
    args = _args(arg)
    # LoRA on W_q, W_v (rank 8 until a point sets it), the head, trec, CPU scale
    config = load_config(f"{Path(__file__).with_name('lora_minilm.py')}:task=trec,runlocal")
    # TREC questions: 13 word pieces at the median, 19 at the 90th percentile; the first
    # 16 name the question's type (what / who / how many ...), and a step costs half N = 32's
    config.data.max_len = 16
    config.train.update(
        steps=args.steps,
        learning_rate=2e-3,  # every rank's curve flat before its last evaluation
        warmup_steps=30,
        log_every=25,
        eval_every=25,
        eval_batches=0,  # the whole validation split (495 questions) each time
        train_eval_batches=16,  # the selected model on 256 training questions
        checkpoint_every=100,
    )
    return config


def get_sweep(arg=None):
    ranks = [int(r) for r in _args(arg).ranks.split("+")]
    return [{"model.lora.rank": r, "model.lora.alpha": float(2 * r)} for r in ranks]
