import importlib.util
from pathlib import Path

import numpy as np

RUN = Path(__file__).resolve().parents[2] / "experiments" / "linformer_spectrum" / "run.py"


def test_quick_form_gives_a_spectrum_per_layer_and_head():
    spec = importlib.util.spec_from_file_location("linformer_spectrum_run", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--quick"])
    at_index = np.asarray(result["at_index"])
    assert at_index.shape == (6, 12) and result["index"] == 32
    assert ((at_index > 0) & (at_index <= 1)).all()
    # Linformer's observation holds for MiniLM too: the last layer's attention is the
    # most low-rank (more of its spectrum in the first N/4 singular values) than the first's.
    assert at_index[-1].mean() > at_index[0].mean()
