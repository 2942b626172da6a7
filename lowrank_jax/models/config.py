"""The encoder's config: its fields, their defaults and their validation (``config.model``).

``default_config()`` is assembled from the registries: every attention kind
contributes its options with the defaults of its constructor
(``attention.options_of``), the activations and dense kinds come from
``layers``. A new kind is thus one file plus one registry line, and
``make_attention(kind)`` and the default config build the same model.

``resolve_config(model_config)`` overlays the given fields on the defaults
(an unknown field is an error), checks every field once and returns the
result; ``layer_blocks(cfg)`` gives each layer's attention/FFN group with its
``overrides`` applied. Every error is a ``ConfigError`` in one style:
``model.attention.linformer.proj_len: must be ..., got ...``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping

import ml_collections

from lowrank_jax.attention import ATTENTION, check_attention, options_of
from lowrank_jax.attention.multihead import check_heads
from lowrank_jax.config import (
    ConfigError,
    check_choice,
    check_int,
    check_rate,
    fail,
    within,
)
from lowrank_jax.layers import ACTIVATIONS, FACTORIZED_OPTIONS, check_dense
from lowrank_jax.layers import lora as lora_layer

CHOICES = {
    "positions": ("learned", "sinusoidal"),
    "pooling": ("cls", "mean"),
    "norm": ("pre", "post"),
    "dtype": ("float32", "bfloat16"),
}
placeholder = ml_collections.config_dict.placeholder


def _dense_group() -> dict:
    # kind: one of layers.DENSE; rank, init (default | spectral) and frobenius_decay (λ of
    # λ/2·‖A·B‖², AdamW's decay then skips A and B): the factorized kind's
    return {"kind": "dense", "rank": placeholder(int), **FACTORIZED_OPTIONS}


def default_config() -> ml_collections.ConfigDict:
    """The ``config.model`` fields with their defaults (a small softmax encoder).

    Example:
      >>> default_config().attention.linformer.proj_len == options_of("linformer")["proj_len"]
      True
    """
    return ml_collections.ConfigDict(
        {
            "vocab_size": 256,  # token ids in [0, vocab_size)
            "num_classes": 2,  # C, the classifier's outputs
            "max_len": 512,  # N_max, the longest input (a CLS token comes on top)
            "dim": 64,  # D, model width
            "heads": 4,  # H; D must be a multiple of H
            "num_layers": 2,  # L
            "dropout": 0.1,  # on embeddings and on every residual branch
            "positions": "learned",  # learned | sinusoidal
            "cls_token": True,  # prepend a learned CLS vector
            "pooling": "cls",  # cls (first position) | mean (over real tokens)
            "norm": "pre",  # pre-LN | post-LN (BERT; also normalises the embeddings)
            "norm_eps": 1e-6,  # LayerNorm epsilon
            "two_tower": False,  # pair input [B, 2, N]; head on [u, v, u*v, u-v]
            "head_hidden": 0,  # 0: linear head; > 0: hidden width of an MLP head
            "dtype": "float32",  # computation dtype: float32 | bfloat16 (params stay float32)
            # "" = random init; else a BERT checkpoint (a name such as all-MiniLM-L6-v2, or a
            # folder) whose sizes this config has (models.pretrained.config_from_hf), loaded
            # by build.model before LoRA / adapters are applied; the head stays newly initialised
            "pretrained": "",
            "attention": {
                "kind": "softmax",  # one of attention.ATTENTION
                "dropout": 0.0,  # on attention weights (Performer: must be 0)
                "dense": _dense_group(),  # Q/K/V/output projections
                # one group per kind: its options and their defaults (attention.options_of);
                # softmax.implementation: auto (blocked on CPU from N = 1024) | xla | cudnn |
                # blocked; linformer: P, sharing none | headwise | kv | layerwise; performer:
                # M random features, kernel softmax | relu, redraw fixed | step | call (LRA's:
                # every call, eval included), orthogonal, scaling chi | sqrt, features_type
                # random | deterministic (relu kernel on q, k themselves: LRA's text default)
                **{kind: options_of(kind) for kind in ATTENTION},
            },
            "ffn": {
                "dim": 128,  # F, hidden width
                "activation": "gelu",  # one of layers.ACTIVATIONS (gelu: tanh approximation)
                "dense": _dense_group(),  # up and down denses
            },
            # Per-layer block overrides: {"0-1": {"attention": {"kind": "performer"}}};
            # keys are layer indices and ranges ("0,2", "1-3"), values parts of attention/ffn.
            "overrides": {},
            "lora": {  # LoRA by surgery after the build; rank 0 = off
                "rank": 0,
                "targets": r"layers\.\d+\.attention\.(query|value)",
                "alpha": placeholder(float),  # None: scale 1
                "dropout": 0.0,
                "rslora": False,
                "variant": "lora",  # lora | dora (a trained magnitude per output feature)
                "init": "default",  # default (A random, B 0) | pissa | olora (from W; dense only)
                # per-target [regex, rank, alpha] (alpha null: scale 1), first match wins; with
                # rank > 0, [targets, rank, alpha] is the last rule (peft's rank_pattern)
                "rules": [],
            },
            "adapters": {  # Houlsby adapters by surgery; bottleneck 0 = off
                "bottleneck": 0,
                "targets": r"layers\.\d+\.(attention\.out|ffn\.down)",
            },
        }
    )


def _check_rule(rule, field: str) -> None:
    """A LoRA rule: [regex, rank, alpha] (alpha a number or null)."""
    if not isinstance(rule, list | tuple) or len(rule) != 3 or not isinstance(rule[0], str):
        fail(field, "[regex, rank, alpha], e.g. ['layers\\.0\\..*', 4, 8.0]", rule)
    check_int(rule[1], f"{field}.rank")
    if rule[2] is not None and (isinstance(rule[2], bool) or not isinstance(rule[2], int | float)):
        fail(f"{field}.alpha", "a number or null", rule[2])


def resolve_config(model_config) -> ml_collections.ConfigDict:
    """``config.model`` over the defaults, every field (and every layer's block) checked.

    Builds nothing: the trainer calls it to reject a bad config before any compute.
    The checks run once per distinct config (validation, then the build, then a
    teacher ask for the same one); each call returns a fresh copy.

    Example:
      >>> resolve_config({"dim": 30, "heads": 4})
      Traceback (most recent call last):
      ...
      lowrank_jax.config.ConfigError: model.dim: must be a multiple of heads = 4, got 30
    """
    given = (
        model_config.to_dict()
        if isinstance(model_config, ml_collections.ConfigDict)
        else dict(model_config)
    )
    key = json.dumps(given, sort_keys=True, default=repr)
    if key not in _RESOLVED:
        if len(_RESOLVED) >= 64:
            _RESOLVED.clear()
        _RESOLVED[key] = _resolve(given).to_dict()
    return ml_collections.ConfigDict(copy.deepcopy(_RESOLVED[key]))


_RESOLVED: dict[str, dict] = {}  # the checked configs, by their JSON


def _resolve(given: dict) -> ml_collections.ConfigDict:
    merged = default_config().to_dict()
    _overlay(merged, given, "model")
    cfg = ml_collections.ConfigDict(merged)
    _validate(cfg)
    _validate_block(cfg, {"attention": cfg.attention.to_dict(), "ffn": cfg.ffn.to_dict()}, "model")
    for i, block in enumerate(layer_blocks(cfg)):
        _validate_block(cfg, block, f"model.overrides (layer {i})")
    return cfg


def layer_blocks(cfg: ml_collections.ConfigDict) -> list[dict]:
    """Each layer's ``{"attention", "ffn"}`` config: the model's, with its overrides applied."""
    out = []
    for layer in range(cfg.num_layers):
        block = {"attention": cfg.attention.to_dict(), "ffn": cfg.ffn.to_dict()}
        for spec, changes in cfg.overrides.items():
            if layer in _layer_indices(spec, cfg.num_layers):
                _overlay(block, changes, f"model.overrides[{spec!r}]")
        out.append(block)
    return out


def _overlay(base: dict, new: Mapping, path: str) -> None:
    """Write ``new`` into ``base`` recursively; a key ``base`` lacks is an error.

    A non-empty dict in ``base`` is a group of fields and is merged into; any
    other value (an empty dict such as ``overrides`` included) is replaced.
    """
    for key, value in new.items():
        if key not in base:
            raise ConfigError(f"{path}.{key}: unknown field; valid: {', '.join(sorted(base))}")
        if isinstance(value, ml_collections.ConfigDict):
            value = value.to_dict()
        if isinstance(base[key], dict) and base[key]:
            if not isinstance(value, Mapping):
                fail(f"{path}.{key}", "a group of fields", value)
            _overlay(base[key], value, f"{path}.{key}")
        else:
            base[key] = copy.deepcopy(value)


def _validate(cfg) -> None:
    for field in ("vocab_size", "num_classes", "max_len", "dim", "heads", "num_layers"):
        check_int(cfg[field], f"model.{field}")
    with within("model"):
        check_heads(cfg.dim, cfg.heads)
    check_rate(cfg.dropout, "model.dropout")
    for field, valid in CHOICES.items():
        check_choice(cfg[field], f"model.{field}", valid)
    if cfg.head_hidden:
        check_int(cfg.head_hidden, "model.head_hidden")
    for i, rule in enumerate(cfg.lora.rules):
        _check_rule(rule, f"model.lora.rules[{i}]")
    if cfg.lora.rank or cfg.lora.rules:
        if cfg.lora.rank:
            check_int(cfg.lora.rank, "model.lora.rank")
        check_rate(cfg.lora.dropout, "model.lora.dropout")
        check_choice(cfg.lora.variant, "model.lora.variant", lora_layer.VARIANTS)
        check_choice(cfg.lora.init, "model.lora.init", lora_layer.INITS)
    if cfg.adapters.bottleneck:
        check_int(cfg.adapters.bottleneck, "model.adapters.bottleneck", high=cfg.dim, why="dim")
    if not isinstance(cfg.pretrained, str):
        fail("model.pretrained", "a name or a folder", cfg.pretrained)


def _layer_indices(spec: str, num_layers: int) -> list[int]:
    """``"0,2"``, ``"1-3"`` -> layer indices; errors name the field."""
    field = f"model.overrides[{spec!r}]"
    indices = []
    for part in str(spec).split(","):
        start, _, stop = part.strip().partition("-")
        try:
            first, last = int(start), int(stop or start)
        except ValueError:
            fail(field, "layers such as '0', '0,2' or '1-3'", spec)
        if not 0 <= first <= last < num_layers:
            fail(field, f"layers in [0, {num_layers - 1}] (model.num_layers = {num_layers})", spec)
        indices.extend(range(first, last + 1))
    return indices


def _validate_block(cfg, block: dict, where: str) -> None:
    attention, ffn = block["attention"], block["ffn"]
    kind = check_choice(attention["kind"], f"{where}.attention.kind", sorted(ATTENTION))
    with within(f"{where}.attention"):
        check_attention(
            kind,
            attention[kind],
            max_len=cfg.max_len + int(cfg.cls_token),
            dropout=attention["dropout"],
        )
    check_int(ffn["dim"], f"{where}.ffn.dim")
    check_choice(ffn["activation"], f"{where}.ffn.activation", sorted(ACTIVATIONS))
    for group, shape in (("attention", (cfg.dim, cfg.dim)), ("ffn", (cfg.dim, ffn["dim"]))):
        dense = dict(block[group]["dense"])
        with within(f"{where}.{group}.dense"):
            check_dense(dense.pop("kind"), dense.pop("rank"), *shape, **dense)
