"""Generated blocks of experiments/linformer_spectrum/README.md, from results/spectrum.json."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean

from lowrank_jax.tables import markdown_table, prose, span


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


def top_layer(folder: Path) -> str:
    """The layer highest in both rows of the table, and the range over its heads."""
    spectrum = json.loads((folder / "results" / "spectrum.json").read_text())
    layers = spectrum["at_index"]  # [layer][head]
    means, lowest = [fmean(heads) for heads in layers], [min(heads) for heads in layers]
    top = max(range(len(layers)), key=means.__getitem__)
    both = "highest in both rows" if max(lowest) == lowest[top] else "highest in the mean row"
    text = (
        f"Layer {top} is {both}: mean over heads {means[top]:.3f}, its {len(layers[top])} "
        f"heads {span(layers[top], '.3f')} — in every head of layer {top} the first "
        f"{spectrum['index']} of {spectrum['length']} singular values carry at least "
        f"{lowest[top]:.3f} of their sum. The mean row ranges {span(means, '.3f')}; the lowest "
        f"head of all is {min(lowest):.3f} (layer {lowest.index(min(lowest))}; a flat spectrum "
        f"would give {spectrum['index']}/{spectrum['length']} = "
        f"{spectrum['index'] / spectrum['length']:.2f})."
    )
    return prose(text)


TABLES = {"at_index": at_index, "top_layer": top_layer}
