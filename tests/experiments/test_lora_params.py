from pathlib import Path

from lowrank_jax.config import load_module

RUN = Path(__file__).resolve().parents[2] / "experiments" / "lora_params" / "run.py"


def test_quick_form_reproduces_the_roberta_counts_exactly():
    module = load_module(RUN)
    results = {row["model"]: row for row in module.main(["--quick"])}
    # L x 2 (W_q, W_v) x R x (d_in + d_out)
    assert results["RoBERTa-base"]["lora"] == 12 * 2 * 8 * (768 + 768) == 294_912
    assert results["RoBERTa-large"]["lora"] == 24 * 2 * 8 * (1024 + 1024) == 786_432
    assert results["RoBERTa-base"]["trainable"] == results["RoBERTa-base"]["lora"]
