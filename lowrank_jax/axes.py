"""Dimension letters and logical axis names, defined once for the whole package.

Dimension letters (used in jaxtyping shapes, docstrings and einsum comments):

====  ===============================  ====  ===============================
B     batch                            K     head dim (D / H)
N     sequence length                  R     rank of a low-rank factor
D     model width                      P     Linformer projected length
H     heads                            M     Performer random features
F     FFN hidden width
====  ===============================  ====  ===============================

Logical axis names annotate parameters (``out_sharding`` metadata). Layers name
only these; ``train/sharding.py`` alone maps them to mesh axes, so no layer ever
hard-codes a mesh axis.
"""

from __future__ import annotations

EMBED = "embed"  # model width D
MLP = "mlp"  # FFN hidden width F
HEADS = "heads"  # attention heads H (or H*K when fused)
KV = "kv"  # head dim K
VOCAB = "vocab"  # token vocabulary
RANK = "rank"  # the inner dimension R of A·B; small, normally replicated
LENGTH = "length"  # sequence positions (Linformer E, F; position tables)

LOGICAL_AXES = (EMBED, MLP, HEADS, KV, VOCAB, RANK, LENGTH)

AxisName = str | None
KernelAxes = tuple[AxisName, AxisName]
"""Logical names of a dense kernel's (in, out) axes; ``(None, None)`` = unannotated."""
