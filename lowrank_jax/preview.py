"""``lowrank-jax surgery``: what a config's surgery selects, before anything runs.

The model is built on abstract shapes (``nnx.eval_shape``: no weights in
memory, seconds even for GPT-3's shapes) with its LoRA and adapters, and the
preview lists every layer each rule selected, the rank (and alpha) it gets, the
parameters it adds, and the totals. A rule that selects nothing is the usual
one-line ``ConfigError`` naming the field. PiSSA / OLoRA start from the weights
and pretrained weights are files: neither is needed for shapes, so the preview
builds with the default initialisation and without loading weights (the
shapes are the same).
"""

from __future__ import annotations

import ml_collections
from flax import nnx

from lowrank_jax import build, surgery
from lowrank_jax.layers import FactorizedDense, LoRA, WithAdapter
from lowrank_jax.paths import dotted, modules
from lowrank_jax.train.state import validate


def _abstract(model_config: ml_collections.ConfigDict, with_surgery: bool) -> nnx.Module:
    config = ml_collections.ConfigDict(model_config.to_dict())
    config.pretrained = ""  # the checkpoint's sizes are already in the config
    config.lora.init = "default"  # the same shapes; PiSSA / OLoRA read weights
    return nnx.eval_shape(
        lambda: build.model(config, rngs=build.run_rngs(0), with_surgery=with_surgery)
    )


def rows(config: ml_collections.ConfigDict) -> tuple[list[list[str]], dict[str, int]]:
    """One row per selected layer (path, what, rank, alpha, parameters added; a
    factorized layer: against its dense kernel) and the totals."""
    model_config = validate(config)
    before = _abstract(model_config, with_surgery=False)
    after = _abstract(model_config, with_surgery=True)
    table = []
    for path, module in modules(after):
        if isinstance(module, LoRA):
            added = module.rank * (module.in_features + module.out_features)
            if module.variant == "dora":
                added += module.out_features
            alpha = "—" if module.alpha is None else f"{module.alpha:g}"
            what = "LoRA" if module.variant == "lora" else "DoRA"
            table.append([dotted(path), what, str(module.rank), alpha, f"{added:+,}"])
        elif isinstance(module, WithAdapter):
            added = surgery.count_params(module.adapter)["total"]
            bottleneck = str(module.adapter.bottleneck)
            table.append([dotted(path), "adapter", bottleneck, "—", f"{added:+,}"])
        elif isinstance(module, FactorizedDense):  # built factorized (model.*.dense.kind)
            i, o, r = module.in_features, module.out_features, module.rank
            table.append([dotted(path), "factorized", str(r), "—", f"{r * (i + o) - i * o:+,}"])
    counts = surgery.count_params(after, config.train.get("trainable", "auto"))
    totals = {
        "before": surgery.count_params(before)["total"],
        "total": counts["total"],
        "trainable": counts["trainable"],
        "frozen": counts["total"] - counts["trainable"],
    }
    return table, totals


def render(config: ml_collections.ConfigDict) -> str:
    """The preview as text: the selected layers, then the totals."""
    from lowrank_jax.tables import markdown_table

    table, totals = rows(config)
    lines = []
    if table:
        lines.append(
            markdown_table(["layer", "kind", "rank", "alpha", "params added"], table, "llrrr")
        )
    else:
        lines.append("no LoRA or adapter rules: the model trains as built")
    share = totals["trainable"] / totals["total"]
    lines.append(
        f"\nparameters: {totals['total']:,} ({totals['total'] - totals['before']:+,} by "
        f"surgery); trainable {totals['trainable']:,} ({share:.2%}), frozen "
        f"{totals['frozen']:,}"
    )
    return "\n".join(lines)
