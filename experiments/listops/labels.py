"""The test split's label counts (the majority-class baseline the READMEs quote).

python experiments/listops/labels.py     # writes results/labels.json
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lowrank_jax.config import load_config
from lowrank_jax.data import pipeline

HERE = Path(__file__).parent
CONFIG = HERE.parents[1] / "configs" / "listops.py"


def main() -> dict:
    data = load_config(f"{CONFIG}:runlocal").data
    test = pipeline.split_source(data, "test")
    labels = np.array([int(test[i]["label"]) for i in range(len(test))])
    counts = np.bincount(labels, minlength=10)
    record = {
        "dataset": data.name,
        "split": "test",
        "examples": len(labels),
        "counts": counts.tolist(),
        "majority_class": int(counts.argmax()),
        "majority_fraction": float(counts.max() / len(labels)),
    }
    (HERE / "results" / "labels.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
