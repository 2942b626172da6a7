"""The one configurable Transformer encoder; every experiment is a config of it.

    tokens [B, N] -> embed + positions (+ CLS) -> L blocks -> norm -> pool -> head -> logits [B, C]

A block is attention + FFN, each in a residual branch with dropout, pre-LN
(Xiong et al. 2020) or post-LN (BERT). Attention is ``make_attention(kind)``
(softmax, Linformer, Performer), the Q/K/V/output and FFN denses are
``make_dense(kind, rank)``, and any layer may override its block config
(``overrides``), e.g. Performer in layers 0-1 and softmax elsewhere. LoRA and
adapters in the config are applied by ``surgery`` after the build, exactly as a
user would apply them to any model. With ``two_tower`` the input is a pair
[B, 2, N], both sides share the encoder and the head sees [u, v, u·v, u−v]
(the Long Range Arena matching set-up). Parameters carry logical axis names.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import jax.numpy as jnp
import ml_collections
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from lowrank_jax.attention import ATTENTION, make_attention
from lowrank_jax.attention.softmax import IMPLEMENTATIONS
from lowrank_jax.axes import EMBED, LENGTH, MLP, VOCAB
from lowrank_jax.layers import DENSE, annotated, make_dense
from lowrank_jax.layers.common import axes_metadata, check_int_range
from lowrank_jax.surgery import add_adapters, apply_lora

ACTIVATIONS = {
    "gelu": nnx.gelu,  # tanh approximation
    "gelu_exact": lambda x: nnx.gelu(x, approximate=False),  # erf, as BERT
    "relu": nnx.relu,
    "silu": nnx.silu,
}
CHOICES = {
    "positions": ("learned", "sinusoidal"),
    "pooling": ("cls", "mean"),
    "norm": ("pre", "post"),
    "dtype": ("float32", "bfloat16"),
}
placeholder = ml_collections.config_dict.placeholder


def default_config() -> ml_collections.ConfigDict:
    """The ``config.model`` fields with their defaults (a small softmax encoder)."""
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
            # before LoRA / adapters are applied; the head stays newly initialised
            "pretrained": "",
            "attention": {
                "kind": "softmax",  # softmax | linformer | performer
                "dropout": 0.0,  # on attention weights (Performer: must be 0)
                "dense": {"kind": "dense", "rank": placeholder(int)},  # Q/K/V/output projections
                # exact attention: auto (blocked on CPU from N = 1024) | xla | cudnn | blocked
                "softmax": {"implementation": "auto"},
                "linformer": {"proj_len": 64, "sharing": "none"},  # P; none|headwise|kv|layerwise
                "performer": {  # M random features; softmax|relu; fixed|step
                    "num_features": 64,
                    "kernel": "softmax",
                    "redraw": "fixed",
                    "orthogonal": True,
                    "scaling": "chi",
                },
            },
            "ffn": {
                "dim": 128,  # F, hidden width
                "activation": "gelu",  # gelu (tanh approximation) | gelu_exact (erf) | relu | silu
                "dense": {"kind": "dense", "rank": placeholder(int)},  # up and down denses
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
            },
            "adapters": {  # Houlsby adapters by surgery; bottleneck 0 = off
                "bottleneck": 0,
                "targets": r"layers\.\d+\.(attention\.out|ffn\.down)",
            },
        }
    )


# --------------------------------------------------------------------------- #
# Modules


def _layer_norm(dim: int, eps: float, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    meta = axes_metadata((EMBED,))
    return nnx.LayerNorm(
        dim, epsilon=eps, dtype=dtype, scale_metadata=meta, bias_metadata=meta, rngs=rngs
    )


class FeedForward(nnx.Module):
    """down(act(up(x))): [B, N, D] -> [B, N, D] through width F."""

    def __init__(self, dim: int, hidden: int, *, activation: str, kind: str, rank, dtype, rngs):
        self.up = make_dense(
            kind, dim, hidden, rank=rank, kernel_axes=(EMBED, MLP), dtype=dtype, rngs=rngs
        )
        self.down = make_dense(
            kind, hidden, dim, rank=rank, kernel_axes=(MLP, EMBED), dtype=dtype, rngs=rngs
        )
        self.activation = ACTIVATIONS[activation]

    def __call__(self, x: Float[Array, "B N D"]) -> Float[Array, "B N D"]:
        return self.down(self.activation(self.up(x)))


class Block(nnx.Module):
    """Attention and FFN, each a residual branch with dropout; pre- or post-LN."""

    def __init__(
        self,
        dim: int,
        attention: nnx.Module,
        ffn: FeedForward,
        *,
        dropout: float,
        norm: str,
        norm_eps: float,
        dtype,
        rngs,
    ):
        self.attention_norm = _layer_norm(dim, norm_eps, dtype, rngs)
        self.attention = attention
        self.ffn_norm = _layer_norm(dim, norm_eps, dtype, rngs)
        self.ffn = ffn
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.pre_norm = norm == "pre"

    def __call__(self, x: Float[Array, "B N D"], mask: Bool[Array, "B N"]) -> Float[Array, "B N D"]:
        if self.pre_norm:
            x = x + self.dropout(self.attention(self.attention_norm(x), mask))
            return x + self.dropout(self.ffn(self.ffn_norm(x)))
        x = self.attention_norm(x + self.dropout(self.attention(x, mask)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


def sinusoidal(length: int, dim: int) -> Float[Array, "N D"]:
    """The fixed sin/cos position table of Vaswani et al. (Section 3.5)."""
    position = jnp.arange(length)[:, None]
    rate = jnp.exp(-math.log(10000.0) * jnp.arange(0, dim, 2) / dim)
    table = jnp.zeros((length, dim))
    table = table.at[:, 0::2].set(jnp.sin(position * rate))
    return table.at[:, 1::2].set(jnp.cos(position * rate[: dim // 2]))


class Encoder(nnx.Module):
    """The encoder; build it from a config with ``build_encoder``.

    ``encoder(tokens, mask) -> logits [B, C]``; ``encoder.encode(tokens, mask)
    -> [B, N, D]`` (token positions only; a CLS vector is pooled, not returned).
    ``mask`` is bool [B, N], True for real tokens (None: all real). With
    ``two_tower``, tokens and mask are [B, 2, N].
    """

    def __init__(self, cfg: ml_collections.ConfigDict, blocks: list[dict], *, rngs: nnx.Rngs):
        dim, dtype = cfg.dim, jnp.dtype(cfg.dtype)
        total_len = cfg.max_len + int(cfg.cls_token)
        normal = nnx.initializers.normal(0.02)
        self.embed = nnx.Embed(
            cfg.vocab_size,
            dim,
            dtype=dtype,
            embedding_init=normal,
            embedding_metadata=axes_metadata((VOCAB, EMBED)),
            rngs=rngs,
        )
        learned = cfg.positions == "learned"
        self.positions = (
            annotated(nnx.Param, normal(rngs.params(), (total_len, dim)), (LENGTH, EMBED))
            if learned
            else nnx.data(None)
        )
        self.cls = (
            annotated(nnx.Param, normal(rngs.params(), (dim,)), (EMBED,))
            if cfg.cls_token
            else nnx.data(None)
        )
        self.embed_norm = (
            _layer_norm(dim, cfg.norm_eps, dtype, rngs) if cfg.norm == "post" else nnx.data(None)
        )
        self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs)
        shared: dict = {}  # modules shared across layers (Linformer's layerwise E)
        self.layers = nnx.List(
            [
                self._block(cfg, i, block, total_len, shared, dtype, rngs)
                for i, block in enumerate(blocks)
            ]
        )
        self.final_norm = (
            _layer_norm(dim, cfg.norm_eps, dtype, rngs) if cfg.norm == "pre" else nnx.data(None)
        )
        features = 4 * dim if cfg.two_tower else dim
        if cfg.head_hidden:
            self.pre_head = make_dense(
                "dense", features, cfg.head_hidden, kernel_axes=(EMBED, MLP), dtype=dtype, rngs=rngs
            )
            features = cfg.head_hidden
        else:
            self.pre_head = nnx.data(None)
        self.head = make_dense(
            "dense", features, cfg.num_classes, kernel_axes=(EMBED, None), dtype=dtype, rngs=rngs
        )
        self.pooling = cfg.pooling
        self.two_tower = cfg.two_tower
        self.max_len = cfg.max_len

    @staticmethod
    def _block(cfg, layer: int, block: dict, total_len: int, shared: dict, dtype, rngs) -> Block:
        attention, ffn = block["attention"], block["ffn"]
        kind = attention["kind"]
        try:
            attn = make_attention(
                kind,
                cfg.dim,
                cfg.heads,
                max_len=total_len,
                dropout=attention["dropout"],
                options=attention.get(kind, {}),
                dense_kind=attention["dense"]["kind"],
                rank=attention["dense"]["rank"],
                shared=shared,
                dtype=dtype,
                rngs=rngs,
            )
        except ValueError as e:
            raise ValueError(f"model.attention.{kind} (layer {layer}): {e}") from None
        feed_forward = FeedForward(
            cfg.dim,
            ffn["dim"],
            activation=ffn["activation"],
            kind=ffn["dense"]["kind"],
            rank=ffn["dense"]["rank"],
            dtype=dtype,
            rngs=rngs,
        )
        return Block(
            cfg.dim,
            attn,
            feed_forward,
            dropout=cfg.dropout,
            norm=cfg.norm,
            norm_eps=cfg.norm_eps,
            dtype=dtype,
            rngs=rngs,
        )

    def _encode_all(self, tokens: Int[Array, "B N"], mask: Bool[Array, "B N"] | None):
        """All positions, CLS first if configured: ([B, N', D], mask [B, N'])."""
        batch, length = tokens.shape
        if length > self.max_len:
            raise ValueError(f"input length {length} exceeds model.max_len {self.max_len}")
        mask = jnp.ones((batch, length), bool) if mask is None else mask.astype(bool)
        x = self.embed(tokens)  # [B, N, D]
        if self.cls is not None:
            cls = jnp.broadcast_to(self.cls[...].astype(x.dtype), (batch, 1, x.shape[-1]))
            x = jnp.concatenate([cls, x], axis=1)
            mask = jnp.concatenate([jnp.ones((batch, 1), bool), mask], axis=1)
        n = x.shape[1]
        table = (
            self.positions[...][:n] if self.positions is not None else sinusoidal(n, x.shape[-1])
        )
        x = x + table.astype(x.dtype)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        x = self.dropout(x)
        for layer in self.layers:
            x = layer(x, mask)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, mask

    def encode(
        self, tokens: Int[Array, "B N"], mask: Bool[Array, "B N"] | None = None
    ) -> Float[Array, "B N D"]:
        """Contextual token vectors [B, N, D]."""
        x, _ = self._encode_all(tokens, mask)
        return x[:, 1:] if self.cls is not None else x

    def pool(
        self, tokens: Int[Array, "B N"], mask: Bool[Array, "B N"] | None = None
    ) -> Float[Array, "B D"]:
        """One vector per sequence: the first position (``cls``) or the mean over real tokens."""
        x, full_mask = self._encode_all(tokens, mask)
        if self.pooling == "cls":
            return x[:, 0]
        if self.cls is not None:  # the mean is over tokens, not the CLS vector
            x, full_mask = x[:, 1:], full_mask[:, 1:]
        weights = full_mask[..., None].astype(x.dtype)
        return (x * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)

    def __call__(
        self, tokens: Int[Array, "B N"], mask: Bool[Array, "B N"] | None = None
    ) -> Float[Array, "B C"]:
        if self.two_tower:
            if tokens.ndim != 3 or tokens.shape[1] != 2:
                raise ValueError(f"two_tower input must be [B, 2, N], got shape {tokens.shape}")
            batch = tokens.shape[0]
            flat_mask = None if mask is None else mask.reshape(2 * batch, -1)
            pooled = self.pool(tokens.reshape(2 * batch, -1), flat_mask).reshape(batch, 2, -1)
            u, v = pooled[:, 0], pooled[:, 1]
            features = jnp.concatenate([u, v, u * v, u - v], axis=-1)  # [B, 4D]
        else:
            features = self.pool(tokens, mask)
        if self.pre_head is not None:
            features = nnx.gelu(self.pre_head(features))
        return self.head(features).astype(jnp.float32)


# --------------------------------------------------------------------------- #
# Building from a config


def build_encoder(model_config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> Encoder:
    """Validate ``config.model`` and build the encoder (then LoRA / adapters, if set).

    Any bad field raises ``ValueError`` that names it and what is allowed.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> cfg = default_config()
      >>> cfg.attention.kind = "performer"
      >>> cfg.ffn.dense.kind, cfg.ffn.dense.rank = "factorized", 32
      >>> cfg.lora.rank = 8
      >>> model = build_encoder(cfg, rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 16), int)).shape
      (2, 2)
    """
    cfg = resolve_config(model_config)
    blocks = [_block_config(cfg, i) for i in range(cfg.num_layers)]
    model = Encoder(cfg, blocks, rngs=rngs)
    if cfg.pretrained:
        from lowrank_jax.models import pretrained  # imports this module

        pretrained.load_checkpoint(model, cfg.pretrained)
    if cfg.lora.rank:
        lora = cfg.lora
        apply_lora(
            model,
            lora.targets,
            lora.rank,
            alpha=lora.alpha,
            dropout=lora.dropout,
            rslora=lora.rslora,
            rngs=rngs,
        )
    if cfg.adapters.bottleneck:
        add_adapters(model, cfg.adapters.targets, cfg.adapters.bottleneck, rngs=rngs)
    return model


def resolve_config(model_config) -> ml_collections.ConfigDict:
    """``config.model`` over the defaults, every field (and every layer's block) validated.

    Builds nothing: the trainer calls it to reject a bad config before any compute.
    """
    cfg = _merged_with_defaults(model_config)
    _validate(cfg)
    _validate_block(cfg, {"attention": cfg.attention.to_dict(), "ffn": cfg.ffn.to_dict()}, "model")
    for i in range(cfg.num_layers):
        _validate_block(cfg, _block_config(cfg, i), f"model.overrides (layer {i})")
    return cfg


def _merged_with_defaults(model_config) -> ml_collections.ConfigDict:
    """The defaults overlaid with the given fields; an unknown field is an error."""
    merged = default_config().to_dict()
    given = (
        model_config.to_dict()
        if isinstance(model_config, ml_collections.ConfigDict)
        else dict(model_config)
    )
    _overlay(merged, given, "model")
    return ml_collections.ConfigDict(merged)


def _overlay(base: dict, new: Mapping, path: str) -> None:
    """Write ``new`` into ``base`` recursively; a key ``base`` lacks is an error.

    A non-empty dict in ``base`` is a group of fields and is merged into; any
    other value (an empty dict such as ``overrides`` included) is replaced.
    """
    for key, value in new.items():
        if key not in base:
            raise ValueError(f"{path}.{key}: unknown field; valid: {', '.join(sorted(base))}")
        if isinstance(value, ml_collections.ConfigDict):
            value = value.to_dict()
        if isinstance(base[key], dict) and base[key]:
            if not isinstance(value, Mapping):
                raise ValueError(f"{path}.{key}: must be a group of fields, got {value!r}")
            _overlay(base[key], value, f"{path}.{key}")
        else:
            base[key] = copy.deepcopy(value)


def _positive(value, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{path}: must be a positive integer, got {value!r}")


def _choice(value, path: str, valid) -> None:
    if value not in valid:
        raise ValueError(f"{path}: unknown value {value!r}; valid: {', '.join(sorted(valid))}")


def _rate(value, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{path}: must be a rate in [0, 1), got {value!r}")


def _validate(cfg) -> None:
    for field in ("vocab_size", "num_classes", "max_len", "dim", "heads", "num_layers"):
        _positive(cfg[field], f"model.{field}")
    if cfg.dim % cfg.heads:
        raise ValueError(f"model.dim: {cfg.dim} must be a multiple of model.heads = {cfg.heads}")
    _rate(cfg.dropout, "model.dropout")
    for field, valid in CHOICES.items():
        _choice(cfg[field], f"model.{field}", valid)
    if cfg.head_hidden:
        _positive(cfg.head_hidden, "model.head_hidden")
    if cfg.lora.rank:
        _positive(cfg.lora.rank, "model.lora.rank")
    if cfg.adapters.bottleneck:
        check_int_range(
            cfg.adapters.bottleneck, cfg.dim, name="model.adapters.bottleneck", bound="model.dim"
        )
    if not isinstance(cfg.pretrained, str):
        raise ValueError(f"model.pretrained: must be a name or a folder, got {cfg.pretrained!r}")


def _layer_indices(spec: str, num_layers: int) -> list[int]:
    """``"0,2"``, ``"1-3"`` -> layer indices; errors name the field."""
    indices = []
    for part in str(spec).split(","):
        start, _, stop = part.strip().partition("-")
        try:
            first, last = int(start), int(stop or start)
        except ValueError:
            raise ValueError(
                f"model.overrides[{spec!r}]: layers must look like '0', '0,2' or '1-3'"
            ) from None
        if not 0 <= first <= last < num_layers:
            raise ValueError(
                f"model.overrides[{spec!r}]: layers must be in [0, {num_layers - 1}] "
                f"(model.num_layers = {num_layers})"
            )
        indices.extend(range(first, last + 1))
    return indices


def _block_config(cfg, layer: int) -> dict:
    """The attention/ffn config of one layer: the model's, with its overrides applied."""
    block = {"attention": cfg.attention.to_dict(), "ffn": cfg.ffn.to_dict()}
    for spec, changes in cfg.overrides.items():
        if layer in _layer_indices(spec, cfg.num_layers):
            _overlay(block, changes, f"model.overrides[{spec!r}]")
    return block


def _validate_block(cfg, block: dict, where: str) -> None:
    attention, ffn = block["attention"], block["ffn"]
    _choice(attention["kind"], f"{where}.attention.kind", ATTENTION)
    _choice(
        attention["softmax"]["implementation"],
        f"{where}.attention.softmax.implementation",
        IMPLEMENTATIONS,
    )
    _rate(attention["dropout"], f"{where}.attention.dropout")
    _positive(ffn["dim"], f"{where}.ffn.dim")
    _choice(ffn["activation"], f"{where}.ffn.activation", ACTIVATIONS)
    limits = {"attention": cfg.dim, "ffn": min(cfg.dim, ffn["dim"])}
    for part, limit in limits.items():
        dense = block[part]["dense"]
        _choice(dense["kind"], f"{where}.{part}.dense.kind", DENSE)
        if dense["kind"] == "factorized":
            if dense["rank"] is None:
                raise ValueError(f"{where}.{part}.dense.rank: dense kind 'factorized' needs a rank")
            check_int_range(
                dense["rank"],
                limit,
                name=f"{where}.{part}.dense.rank",
                bound=f"min of the layer's widths = {limit}",
            )
