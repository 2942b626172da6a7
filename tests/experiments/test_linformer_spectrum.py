from pathlib import Path

import numpy as np

from lowrank_jax.config import load_module

RUN = Path(__file__).resolve().parents[2] / "experiments" / "linformer_spectrum" / "run.py"


def test_quick_form_gives_a_spectrum_per_layer_and_head():
    module = load_module(RUN)
    result = module.main(["--quick"])
    at_index = np.asarray(result["at_index"])
    assert at_index.shape == (6, 12) and result["index"] == 32
    assert ((at_index > 0) & (at_index <= 1)).all()
    # Linformer's observation holds for MiniLM too: the last layer's attention is the
    # most low-rank (more of its spectrum in the first N/4 singular values) than the first's.
    assert at_index[-1].mean() > at_index[0].mean()
