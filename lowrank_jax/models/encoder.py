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

import math

import jax.numpy as jnp
import ml_collections
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from lowrank_jax.attention import make_attention
from lowrank_jax.axes import EMBED, LENGTH, MLP, VOCAB
from lowrank_jax.layers import ACTIVATIONS, FACTORIZED_OPTIONS, annotated, make_dense
from lowrank_jax.layers.common import axes_metadata
from lowrank_jax.models.config import layer_blocks, resolve_config

# --------------------------------------------------------------------------- #
# Modules


def _layer_norm(dim: int, eps: float, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    meta = axes_metadata((EMBED,))
    return nnx.LayerNorm(
        dim, epsilon=eps, dtype=dtype, scale_metadata=meta, bias_metadata=meta, rngs=rngs
    )


def _options(dense: dict) -> dict:
    """A dense group's options beyond kind and rank (``layers.FACTORIZED_OPTIONS``)."""
    return {key: dense[key] for key in FACTORIZED_OPTIONS}


class FeedForward(nnx.Module):
    """down(act(up(x))): [B, N, D] -> [B, N, D] through width F."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        activation: str,
        kind: str,
        rank,
        dense_options: dict | None = None,
        dtype,
        rngs,
    ):
        def dense(size_in, size_out, axes):
            return make_dense(
                kind,
                size_in,
                size_out,
                rank=rank,
                kernel_axes=axes,
                dtype=dtype,
                rngs=rngs,
                **(dense_options or {}),
            )

        self.up = dense(dim, hidden, (EMBED, MLP))
        self.down = dense(hidden, dim, (MLP, EMBED))
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
        self.record = False  # sow the output (``capture_intermediates``)

    def __call__(self, x: Float[Array, "B N D"], mask: Bool[Array, "B N"]) -> Float[Array, "B N D"]:
        if self.pre_norm:
            x = x + self.dropout(self.attention(self.attention_norm(x), mask))
            x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        else:
            x = self.attention_norm(x + self.dropout(self.attention(x, mask)))
            x = self.ffn_norm(x + self.dropout(self.ffn(x)))
        if self.record:
            self.sow(nnx.Intermediate, "hidden_states", x)
        return x


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
        """``cfg``: a resolved ``config.model``; ``blocks``: each layer's attention/ffn config."""
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
            [self._block(cfg, block, total_len, shared, dtype, rngs) for block in blocks]
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
    def _block(cfg, block: dict, total_len: int, shared: dict, dtype, rngs) -> Block:
        attention, ffn = block["attention"], block["ffn"]
        kind = attention["kind"]
        attn = make_attention(
            kind,
            cfg.dim,
            cfg.heads,
            max_len=total_len,
            dropout=attention["dropout"],
            options=attention.get(kind, {}),
            dense_kind=attention["dense"]["kind"],
            rank=attention["dense"]["rank"],
            dense_options=_options(attention["dense"]),
            shared=shared,
            dtype=dtype,
            rngs=rngs,
        )
        feed_forward = FeedForward(
            cfg.dim,
            ffn["dim"],
            activation=ffn["activation"],
            kind=ffn["dense"]["kind"],
            rank=ffn["dense"]["rank"],
            dense_options=_options(ffn["dense"]),
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


def build_encoder(model_config, *, rngs: nnx.Rngs) -> Encoder:
    """The encoder's modules from ``config.model`` (validated by ``resolve_config``).

    Modules only: pretrained weights, LoRA and adapters are ``build.model``'s job.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from lowrank_jax.models.config import default_config
      >>> cfg = default_config()
      >>> cfg.attention.kind = "performer"
      >>> cfg.ffn.dense.kind, cfg.ffn.dense.rank = "factorized", 32
      >>> model = build_encoder(cfg, rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 16), int)).shape
      (2, 2)
    """
    cfg = resolve_config(model_config)
    return Encoder(cfg, layer_blocks(cfg), rngs=rngs)


def capture_intermediates(method, *args, **kwargs):
    """``(output, intermediates)`` of one call of an encoder method, with intermediates sown.

    ``method`` is the encoder or one of its bound methods (``model.pool``...).
    Sown (``nnx.Intermediate``, by ``nnx.capture``): every block's output
    ``layers.<i>.hidden_states`` [B, N', D] (N' counts a CLS vector) and, for
    mixers that form them, ``layers.<i>.attention.mixer.attention_weights``:
    softmax [B, H, N', N'], Linformer [B, H, N', P] (recording takes the
    explicit-weights path of exact attention). Performer forms none. Outside
    this call nothing is recorded or computed for it.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from lowrank_jax.models.config import default_config
      >>> model = build_encoder(default_config(), rngs=nnx.Rngs(0))
      >>> logits, sown = capture_intermediates(model, jnp.ones((2, 8), int))
      >>> sown["layers"][0]["attention"]["mixer"]["attention_weights"][0].shape
      (2, 4, 9, 9)
    """
    module = getattr(method, "__self__", method)
    module.set_attributes(record=True, raise_if_not_found=False)
    try:
        return nnx.capture(method, nnx.Intermediate)(*args, **kwargs)
    finally:
        module.set_attributes(record=False, raise_if_not_found=False)
