"""LoRA adapters in Hugging Face peft's format: export ours, import theirs.

A peft LoRA folder is ``adapter_config.json`` + ``adapter_model.safetensors``
with keys ``base_model.model.<module>.lora_A.weight`` ([R, in]) and
``.lora_B.weight`` ([out, R]), and the update scale lora_alpha / R (or
lora_alpha / √R with rsLoRA). Ours keeps A [in, R] and B [R, out], so the
layout is a transpose. Module names are those of a BERT (``BertModel``, as
``AutoModel`` loads all-MiniLM-L6-v2):

    layers.3.attention.query  <->  encoder.layer.3.attention.self.query
    layers.3.attention.out    <->  encoder.layer.3.attention.output.dense
    layers.3.ffn.up / down    <->  encoder.layer.3.intermediate.dense / output.dense

    export_peft(model, "runs/lora-adapter")        # PeftModel.from_pretrained(bert, that)
    import_peft(model, "runs/lora-adapter")        # LoRA applied and filled in
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from lowrank_jax import surgery
from lowrank_jax.layers import LoRA

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."
OURS_TO_BERT = {
    "attention.query": "attention.self.query",
    "attention.key": "attention.self.key",
    "attention.value": "attention.self.value",
    "attention.out": "attention.output.dense",
    "ffn.up": "intermediate.dense",
    "ffn.down": "output.dense",
}
BERT_TO_OURS = {bert: ours for ours, bert in OURS_TO_BERT.items()}


def bert_name(path: str) -> str:
    """``layers.3.attention.query`` -> ``encoder.layer.3.attention.self.query``."""
    match = re.fullmatch(r"layers\.(\d+)\.(.+)", path)
    if not match or match[2] not in OURS_TO_BERT:
        raise ValueError(
            f"peft: LoRA at {path} has no BERT module name; supported: layers.N."
            + ", layers.N.".join(OURS_TO_BERT)
        )
    return f"encoder.layer.{match[1]}.{OURS_TO_BERT[match[2]]}"


def our_path(name: str) -> str:
    """``encoder.layer.3.attention.self.query`` -> ``layers.3.attention.query``."""
    match = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", name)
    if not match or match[2] not in BERT_TO_OURS:
        raise ValueError(
            f"peft: module {name} is not a BERT linear layer this encoder has; supported: "
            "encoder.layer.N." + ", encoder.layer.N.".join(BERT_TO_OURS)
        )
    return f"layers.{match[1]}.{BERT_TO_OURS[match[2]]}"


def _loras(model: nnx.Module) -> dict[str, LoRA]:
    return {
        surgery.dotted(path): module
        for path, module in nnx.iter_modules(model)
        if isinstance(module, LoRA)
    }


def export_peft(
    model: nnx.Module,
    folder: str | Path,
    *,
    base_model: str = "sentence-transformers/all-MiniLM-L6-v2",
    overwrite: bool = False,
) -> Path:
    """Write the model's LoRA layers as a peft adapter folder; returns the folder.

    Every LoRA must share one rank, alpha and rsLoRA setting (peft's config has
    one of each) and be unmerged. An existing adapter is kept unless ``overwrite``.
    """
    from safetensors.numpy import save_file

    folder = Path(folder)
    loras = _loras(model)
    if not loras:
        raise ValueError("peft export: the model has no LoRA layers (surgery.apply_lora first)")
    settings = {(m.rank, m.scale, m.rslora) for m in loras.values()}
    if len(settings) > 1:
        raise ValueError(
            f"peft export: LoRA layers differ in (rank, scale, rslora): {sorted(settings)}; "
            "peft's adapter_config.json has one of each"
        )
    merged = [path for path, m in loras.items() if m.merged]
    if merged:
        raise ValueError(f"peft export: {merged[0]} is merged; unmerge it first")
    if (folder / CONFIG).exists() and not overwrite:
        raise FileExistsError(f"peft export: {folder / CONFIG} exists; pass overwrite=True")
    rank, scale, rslora = settings.pop()
    alpha = scale * (math.sqrt(rank) if rslora else rank)  # peft: scale = alpha / R (or √R)
    tensors, modules = {}, []
    for path, lora in sorted(loras.items()):
        name = bert_name(path)
        modules.append(name)
        tensors[f"{PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(
            np.asarray(lora.lora_a[...], np.float32).T
        )
        tensors[f"{PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(
            np.asarray(lora.lora_b[...], np.float32).T
        )
    dropouts = {m.dropout.rate if m.dropout is not None else 0.0 for m in loras.values()}
    config = {
        "peft_type": "LORA",
        "task_type": "FEATURE_EXTRACTION",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": max(dropouts),
        "use_rslora": rslora,
        "target_modules": modules,  # full names: peft matches name == target exactly
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
    }
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / WEIGHTS))
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def import_peft(model: nnx.Module, folder: str | Path, *, rngs: nnx.Rngs | None = None):
    """Apply a peft LoRA adapter folder to ``model`` (LoRA added where missing); returns it."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    for name in (CONFIG, WEIGHTS):
        if not (folder / name).exists():
            raise FileNotFoundError(f"peft import: {folder / name} is missing")
    config = json.loads((folder / CONFIG).read_text())
    if config.get("peft_type") != "LORA":
        raise ValueError(f"peft import: peft_type {config.get('peft_type')!r}; valid: LORA")
    tensors = load_file(str(folder / WEIGHTS))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        match = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.\w+)?\.weight", key)
        if not match:
            raise ValueError(f"peft import: tensor {key} is not a LoRA A/B weight")
        pairs.setdefault(our_path(match[1]), {})[match[2]] = value
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    rslora = bool(config.get("use_rslora", False))
    existing = _loras(model)
    missing = sorted(path for path in pairs if path not in existing)
    if missing:
        pattern = "|".join(re.escape(p) for p in missing)
        surgery.apply_lora(
            model, pattern, rank, alpha=alpha, rslora=rslora, rngs=rngs or nnx.Rngs(0)
        )
    loras = _loras(model)
    for path, pair in sorted(pairs.items()):
        lora = loras[path]
        missing_half = sorted({"A", "B"} - set(pair))
        if missing_half:
            raise ValueError(f"peft import: {bert_name(path)} lacks lora_{missing_half[0]}")
        a, b = pair["A"].T, pair["B"].T
        if a.shape != lora.lora_a.shape or b.shape != lora.lora_b.shape:
            raise ValueError(
                f"peft import: {bert_name(path)} has A {a.shape}, B {b.shape}; the layer "
                f"needs {tuple(lora.lora_a.shape)}, {tuple(lora.lora_b.shape)}"
            )
        if lora.rank != rank or not math.isclose(
            lora.scale, alpha / (math.sqrt(rank) if rslora else rank)
        ):
            raise ValueError(f"peft import: {path} already has LoRA of another rank or scale")
        lora.lora_a[...] = jnp.asarray(a, lora.lora_a.dtype)
        lora.lora_b[...] = jnp.asarray(b, lora.lora_b.dtype)
    return model
