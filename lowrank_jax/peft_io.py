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
import warnings
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

    Every LoRA must share one rank, alpha, rsLoRA setting, variant and init
    (peft's config has one of each) and be unmerged. DoRA layers export with
    their magnitude (``lora_magnitude_vector``, ``use_dora``). PiSSA / OLoRA
    layers export as peft's own conversion does
    (``path_initial_model_for_weight_conversion``): the plain LoRA
    s·(A·B − A₀·B₀) on the original W, of rank 2R with the same scale, so it
    loads in peft onto the unchanged pretrained model. An existing adapter is
    kept unless ``overwrite``.
    """
    from safetensors.numpy import save_file

    folder = Path(folder)
    loras = _loras(model)
    if not loras:
        raise ValueError("peft export: the model has no LoRA layers (surgery.apply_lora first)")
    settings = {(m.rank, m.scale, m.rslora, m.variant, m.init) for m in loras.values()}
    if len(settings) > 1:
        raise ValueError(
            "peft export: LoRA layers differ in (rank, scale, rslora, variant, init): "
            f"{sorted(settings)}; peft's adapter_config.json has one of each"
        )
    rank, scale, rslora, variant, init = settings.pop()
    if variant == "dora" and init != "default":
        raise ValueError(f"peft export: DoRA with init {init!r} has no peft form; only plain DoRA")
    merged = [path for path, m in loras.items() if m.merged]
    if merged:
        raise ValueError(f"peft export: {merged[0]} is merged; unmerge it first")
    if (folder / CONFIG).exists() and not overwrite:
        raise FileExistsError(f"peft export: {folder / CONFIG} exists; pass overwrite=True")
    tensors, modules = {}, []
    for path, lora in sorted(loras.items()):
        name = bert_name(path)
        modules.append(name)
        a, b = (np.asarray(v[...], np.float32) for v in (lora.lora_a, lora.lora_b))
        if init != "default":  # s·A·B + W_res = W + s·[A, A₀]·[B; −B₀]
            a = np.concatenate([a, np.asarray(lora.start_a[...], np.float32)], axis=1)
            b = np.concatenate([b, -np.asarray(lora.start_b[...], np.float32)], axis=0)
        tensors[f"{PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(a.T)
        tensors[f"{PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(b.T)
        if variant == "dora":
            tensors[f"{PREFIX}{name}.lora_magnitude_vector"] = np.asarray(
                lora.magnitude[...], np.float32
            )
    rank *= 1 if init == "default" else 2
    alpha = scale * (math.sqrt(rank) if rslora else rank)  # peft: scale = alpha / R (or √R)
    dropouts = {m.dropout.rate if m.dropout is not None else 0.0 for m in loras.values()}
    config = {
        "peft_type": "LORA",
        "task_type": "FEATURE_EXTRACTION",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": max(dropouts),
        "use_rslora": rslora,
        "use_dora": variant == "dora",
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


PEFT_DEFAULT_ALPHA = PEFT_DEFAULT_RANK = 8  # peft's LoraConfig defaults for lora_alpha and r


def import_peft(model: nnx.Module, folder: str | Path, *, rngs: nnx.Rngs | None = None):
    """Apply a peft LoRA adapter folder to ``model`` (LoRA added where missing); returns it.

    All or nothing: the whole adapter is checked against the model first (its
    config; every tensor's module, shape and values), and only then does the
    model change, so a bad adapter leaves it as it was. As in peft, a config
    without ``lora_alpha`` (or ``r``) means 8 (a warning says so). Per-module
    ranks and scales (``rank_pattern``, ``alpha_pattern``) are honoured as peft
    matches them (the first key whose regex ends the module's name) and become
    per-layer LoRA rules (``surgery.apply_lora(rules=...)``).
    """
    folder = Path(folder)
    rank, alpha, rslora, patterns, variant = _settings(folder)
    pairs = _pairs(folder)
    settings = {}
    for path in pairs:
        name = bert_name(path)
        r = int(_pattern_value(patterns["rank_pattern"], name, rank))
        a = float(_pattern_value(patterns["alpha_pattern"], name, alpha))
        settings[path] = (r, a, a / (math.sqrt(r) if rslora else r))
    modules = {surgery.dotted(path): m for path, m in nnx.iter_modules(model)}
    layers = {int(m[1]) for p in modules if (m := re.fullmatch(r"layers\.(\d+)", p))}
    for path, pair in sorted(pairs.items()):
        name, target = bert_name(path), modules.get(path)
        if target is None:
            raise ValueError(
                f"peft import: {name} has no layer here; the model has layers.0 to "
                f"layers.{max(layers, default=-1)}"
            )
        parts = {"A", "B", "magnitude_vector"} if variant == "dora" else {"A", "B"}
        missing_half = sorted(parts - set(pair))
        if missing_half:
            raise ValueError(f"peft import: {name} lacks lora_{missing_half[0]}")
        if set(pair) - parts:
            raise ValueError(f"peft import: {name} has lora_magnitude_vector without use_dora")
        rank, _, scale = settings[path]
        if isinstance(target, LoRA) and (target.variant, target.init) != (variant, "default"):
            raise ValueError(
                f"peft import: {path} is a {target.variant} layer with init {target.init!r}; "
                f"the adapter is {variant} with the default init"
            )
        if isinstance(target, LoRA) and (
            target.rank != rank or not math.isclose(target.scale, scale)
        ):
            raise ValueError(f"peft import: {path} already has LoRA of another rank or scale")
        a, b = pair["A"].T, pair["B"].T
        need = ((target.in_features, rank), (rank, target.out_features))
        if (a.shape, b.shape) != need:
            raise ValueError(
                f"peft import: {name} has A {a.shape}, B {b.shape}; the layer needs "
                f"{need[0]}, {need[1]} (r = {rank})"
            )
        magnitude = pair.get("magnitude_vector", np.zeros(target.out_features))
        if magnitude.shape != (target.out_features,):
            raise ValueError(
                f"peft import: {name} has lora_magnitude_vector {magnitude.shape}; the layer "
                f"needs ({target.out_features},)"
            )
        if not all(np.isfinite(x).all() for x in (a, b, magnitude)):
            raise ValueError(f"peft import: {name} has NaN or infinite weights")
    # every check passed: now change the model
    missing = sorted(path for path in pairs if not isinstance(modules[path], LoRA))
    if missing:
        rules = [(re.escape(path), *settings[path][:2]) for path in missing]
        surgery.apply_lora(
            model, rules=rules, rslora=rslora, variant=variant, rngs=rngs or nnx.Rngs(0)
        )
    loras = _loras(model)
    for path, pair in pairs.items():
        lora = loras[path]
        lora.lora_a[...] = jnp.asarray(pair["A"].T, lora.lora_a.dtype)
        lora.lora_b[...] = jnp.asarray(pair["B"].T, lora.lora_b.dtype)
        if variant == "dora":
            lora.magnitude[...] = jnp.asarray(pair["magnitude_vector"], lora.magnitude.dtype)
    return model


def _pattern_value(pattern: dict, name: str, default):
    """peft's ``get_pattern_key``: the first key whose regex matches the end of ``name``."""
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def _settings(folder: Path) -> tuple[int, float, bool, dict, str]:
    """(rank, alpha, rslora, {rank_pattern, alpha_pattern}, variant) of a peft adapter's
    config; an adapter whose base was changed (PiSSA, OLoRA saved unconverted) is refused."""
    for name in (CONFIG, WEIGHTS):
        if not (folder / name).exists():
            raise FileNotFoundError(f"peft import: {folder / name} is missing")
    try:
        config = json.loads((folder / CONFIG).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"peft import: {folder / CONFIG} is not JSON ({error.msg})") from None
    if config.get("peft_type") != "LORA":
        raise ValueError(f"peft import: peft_type {config.get('peft_type')!r}; valid: LORA")
    patterns = {field: config.get(field) or {} for field in ("rank_pattern", "alpha_pattern")}
    values = {}
    for field, default in (("r", PEFT_DEFAULT_RANK), ("lora_alpha", PEFT_DEFAULT_ALPHA)):
        values[field] = config.get(field)
        if values[field] is None:
            warnings.warn(
                f"peft import: {folder / CONFIG} has no {field}; using peft's default, {default}",
                stacklevel=3,
            )
            values[field] = default
    init = config.get("init_lora_weights", True)
    if init not in (True, False, "gaussian"):
        raise ValueError(
            f"peft import: init_lora_weights {init!r}: the adapter needs the base model it "
            "changed; save it with path_initial_model_for_weight_conversion (a plain LoRA)"
        )
    rslora = bool(config.get("use_rslora", False))
    variant = "dora" if config.get("use_dora") else "lora"
    return int(values["r"]), float(values["lora_alpha"]), rslora, patterns, variant


def _pairs(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{our layer path: {"A": [R, in], "B": [out, R]}}`` of a peft adapter's weights
    (and ``"magnitude_vector"``: [out], DoRA's)."""
    from safetensors.numpy import load_file

    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in load_file(str(folder / WEIGHTS)).items():
        match = re.fullmatch(
            r"(?:base_model\.model\.)?(.+)\.lora_(?:([AB])(?:\.\w+)?\.weight|(magnitude_vector))",
            key,
        )
        if not match:
            raise ValueError(f"peft import: tensor {key} is not a LoRA A/B weight or magnitude")
        pairs.setdefault(our_path(match[1]), {})[match[2] or match[3]] = value
    return pairs
