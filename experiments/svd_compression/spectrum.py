"""How low-rank MiniLM's FFN weights are: the rank each needs to keep a fraction of
its energy (squared singular values; ``layers.factorized.rank_for_energy``).

    python experiments/svd_compression/spectrum.py     # writes results/spectrum.json
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flax import nnx

from lowrank_jax import build
from lowrank_jax.layers.factorized import rank_for_energy
from lowrank_jax.models import pretrained

HERE = Path(__file__).parent
MODEL = "all-MiniLM-L6-v2"
ENERGIES = (0.5, 0.9, 0.99)


def main() -> dict:
    model = build.model(pretrained.config_of(MODEL), rngs=build.run_rngs(0))
    layers = {}
    for path, kernel in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        name = ".".join(str(p) for p in path)
        if ".ffn." in f".{name}" and name.endswith("kernel"):
            s = np.linalg.svd(np.asarray(kernel[...], np.float64), compute_uv=False)
            layers[name] = {
                "shape": list(kernel[...].shape),
                **{f"rank_at_{e}": rank_for_energy(s, e) for e in ENERGIES},
            }
    record = {"model": MODEL, "energies": list(ENERGIES), "layers": layers}
    (HERE / "results" / "spectrum.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
