"""Generated block of experiments/linformer_spectrum/README.md, from results/spectrum.json."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean

from lowrank_jax.tables import markdown_table, prose


def at_index(folder: Path) -> str:
    """Per layer: the mean over heads and the lowest head of the cumulative singular value."""
    spectrum = json.loads((folder / "results" / "spectrum.json").read_text())
    layers = spectrum["at_index"]  # [layer][head]
    lowest = [min(range(len(heads)), key=heads.__getitem__) for heads in layers]
    caption = (
        f"Normalised cumulative singular value at index {spectrum['index']} "
        f"(N = {spectrum['length']}), mean over {spectrum['sentences']} passages, per layer: "
        f"the mean over heads and the lowest head (its index in parentheses):"
    )
    rows = [
        ["mean over heads", *(f"{fmean(heads):.3f}" for heads in layers)],
        [
            "lowest head",
            *(f"{heads[h]:.3f} (h{h})" for heads, h in zip(layers, lowest, strict=True)),
        ],
    ]
    table = markdown_table(["layer", *map(str, range(len(layers)))], rows, "l" + "r" * len(layers))
    return prose(caption) + "\n\n" + table


TABLES = {"at_index": at_index}
