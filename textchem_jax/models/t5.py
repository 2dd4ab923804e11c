"""The T5 encoder-decoder (v1.0 and v1.1) in Flax linen, laid out for logical-axis partitioning.

Architecture as the published T5 / Hugging Face `T5ForConditionalGeneration`: shared token embedding,
pre-norm residual blocks with RMS norms, relative position bias (one table per stack, shared by all its
layers), no 1/sqrt(d_kv) attention scaling (folded into the query initialization), ReLU or gated-GELU
MLP, tied and scaled (v1.0) or separate (v1.1) output logits.

Every parameter carries logical axis names (`vocab, embed, mlp, heads, kv, joined_kv, relpos_buckets`,
plus `layers` when scanned) so `textchem_jax.partitioning` can map them onto a device mesh; the main
activations carry `batch, length, embed/heads/kv/mlp/vocab` constraints.

Token id 0 is padding (and the decoder start token); masks come from the tokens, or from SeqIO segment
ids for packed examples. With `decode=True` the decoder keeps a key/value cache in the "cache"
collection and advances one token per call: see `textchem_jax.models.decoding`.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from textchem_jax.models.config import T5Config

Array = jax.Array

PAD_ID = 0
_MASKED = float(np.finfo(np.float32).min)  # score of a masked key: exp(min - max) is exactly 0

_REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole layer in the backward pass
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def _constrain(x: Array, axes: tuple[str, ...]) -> Array:
    return nn.with_logical_constraint(x, axes)


def _normal(stddev: float) -> nn.initializers.Initializer:
    return nn.initializers.normal(stddev=stddev)


# ----------------------------------------------------------------------------------------------------------
# Building blocks


class RMSNorm(nn.Module):
    """T5's layer norm: scale only, no mean subtraction, no bias; the variance is taken in float32."""

    epsilon: float
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)), (x.shape[-1],),
            self.param_dtype,
        )  # fmt: skip
        x32 = x.astype(jnp.float32)
        variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        normed = x32 * jax.lax.rsqrt(variance + self.epsilon)
        return (scale.astype(jnp.float32) * normed).astype(self.dtype)


class Projection(nn.Module):
    """A bias-free dense layer `x @ kernel` whose 2-D kernel has logical axes `axes` (input, output)."""

    features: int
    axes: tuple[str, str]
    stddev: float
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param(
            "kernel", nn.with_logical_partitioning(_normal(self.stddev), self.axes), (x.shape[-1], self.features),
            self.param_dtype,
        )  # fmt: skip
        return jnp.einsum("...d,df->...f", x.astype(self.dtype), kernel.astype(self.dtype))


class TokenEmbedding(nn.Module):
    """The shared (vocab, embed) table: looks tokens up, and for tied logits `attend`s to it."""

    vocab_size: int
    features: int
    dtype: Any
    param_dtype: Any

    def setup(self):
        self.embedding = self.param(
            "embedding", nn.with_logical_partitioning(_normal(1.0), ("vocab", "embed")),
            (self.vocab_size, self.features), self.param_dtype,
        )  # fmt: skip

    def __call__(self, tokens: Array) -> Array:
        return jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)

    def attend(self, x: Array) -> Array:
        return jnp.einsum("...d,vd->...v", x.astype(self.dtype), self.embedding.astype(self.dtype))


def relative_position_bucket(
    relative_position: Array, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128
) -> Array:
    """T5's bucket of `key_position - query_position`, exactly as Mesh TensorFlow and Hugging Face compute it.

    Half the buckets (per direction when bidirectional) hold exact small distances; the rest grow
    logarithmically up to `max_distance`, beyond which all distances share the last bucket. A causal
    (unidirectional) stack maps every key after the query to bucket 0.
    """
    relative_position = jnp.asarray(relative_position, jnp.int32)
    buckets = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).astype(jnp.int32) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # float32 like the reference; distances below max_exact never use this branch (log(0) avoided).
    scaled = jnp.maximum(distance, 1).astype(jnp.float32) / max_exact
    log_bucket = jnp.log(scaled) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    large = jnp.minimum(max_exact + log_bucket.astype(jnp.int32), num_buckets - 1)
    return buckets + jnp.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    """One (relpos_buckets, heads) table per stack, turned into a (batch|1, heads, q, k) float32 bias."""

    config: T5Config
    bidirectional: bool

    @nn.compact
    def __call__(self, query_positions: Array, key_positions: Array) -> Array:
        """Positions are (q,) and (k,) or per example (batch, q) and (batch, k)."""
        cfg = self.config
        table = self.param(
            "rel_embedding", nn.with_logical_partitioning(_normal(cfg.d_model**-0.5), ("relpos_buckets", "heads")),
            (cfg.relative_attention_num_buckets, cfg.num_heads), jnp.dtype(cfg.param_dtype),
        )  # fmt: skip
        relative = key_positions[..., None, :] - query_positions[..., :, None]
        buckets = relative_position_bucket(
            relative, self.bidirectional, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance
        )
        bias = jnp.take(table, buckets, axis=0).astype(jnp.float32)  # (..., q, k, heads)
        bias = jnp.moveaxis(bias, -1, -3)  # (..., heads, q, k)
        return bias if bias.ndim == 4 else bias[None]


class MultiHeadAttention(nn.Module):
    """T5 attention without 1/sqrt(d_kv) scaling; softmax in float32.

    For decoder self-attention with `decode=True`, keys and values live in the "cache" collection
    (`cached_key`, `cached_value`: batch, length, heads, kv). On the first (initializing) call they are
    created empty with the input's length; on later calls (`decode_position` given) the single new
    token's key and value are written at `decode_position` and attention reads the whole cache.
    """

    config: T5Config
    deterministic: bool = True
    decode: bool = False

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array,
        bias: Array | None,
        mask: Array | None,
        decode_position: Array | None = None,
    ) -> Array:
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

        def project(name: str, stddev: float) -> Projection:
            return Projection(cfg.inner_dim, ("embed", "joined_kv"), stddev, dtype, param_dtype, name=name)

        def split_heads(x: Array) -> Array:
            x = x.reshape(*x.shape[:2], cfg.num_heads, cfg.d_kv)
            return _constrain(x, ("batch", "length", "heads", "kv"))

        query = split_heads(project("query", (cfg.d_model * cfg.d_kv) ** -0.5)(inputs_q))
        key = split_heads(project("key", cfg.d_model**-0.5)(inputs_kv))
        value = split_heads(project("value", cfg.d_model**-0.5)(inputs_kv))

        if self.decode:
            cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
            cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
            if decode_position is not None:
                if query.shape[1] != 1:
                    raise ValueError(f"cached decoding takes one token per step, got {query.shape[1]}")
                slot = jax.nn.one_hot(decode_position, cached_key.value.shape[1], dtype=jnp.bool_)
                slot = slot[:, :, None, None]  # (batch, length, 1, 1)
                key = cached_key.value = jnp.where(slot, key, cached_key.value)
                value = cached_value.value = jnp.where(slot, value, cached_value.value)
                key, value = (_constrain(x, ("batch", "length", "heads", "kv")) for x in (key, value))

        scores = jnp.einsum("bqhd,bkhd->bhqk", query, key).astype(jnp.float32)
        if bias is not None:
            scores = scores + bias
        if mask is not None:
            scores = jnp.where(mask, scores, _MASKED)
        weights = jax.nn.softmax(scores, axis=-1).astype(dtype)
        weights = nn.Dropout(cfg.dropout_rate, deterministic=self.deterministic)(weights)
        context = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
        context = _constrain(context, ("batch", "length", "heads", "kv"))
        context = context.reshape(*context.shape[:2], cfg.inner_dim)
        out = Projection(cfg.d_model, ("joined_kv", "embed"), cfg.inner_dim**-0.5, dtype, param_dtype, name="out")
        return out(context)


class MlpBlock(nn.Module):
    """ReLU MLP (v1.0: wi, wo) or gated-GELU MLP (v1.1: gelu(wi_0 x) * wi_1 x, wo)."""

    config: T5Config
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

        def wi(name: str) -> Array:
            hidden = Projection(cfg.d_ff, ("embed", "mlp"), cfg.d_model**-0.5, dtype, param_dtype, name=name)(x)
            return _constrain(hidden, ("batch", "length", "mlp"))

        if cfg.feed_forward == "relu":
            hidden = jax.nn.relu(wi("wi"))
        else:
            hidden = jax.nn.gelu(wi("wi_0"), approximate=True) * wi("wi_1")
        hidden = nn.Dropout(cfg.dropout_rate, deterministic=self.deterministic)(hidden)
        return Projection(cfg.d_model, ("mlp", "embed"), cfg.d_ff**-0.5, dtype, param_dtype, name="wo")(hidden)


def _norm(cfg: T5Config, name: str) -> RMSNorm:
    return RMSNorm(cfg.layer_norm_epsilon, jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype), name=name)


class EncoderLayer(nn.Module):
    config: T5Config
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: Array, bias: Array, mask: Array) -> tuple[Array, None]:
        cfg = self.config
        dropout = nn.Dropout(cfg.dropout_rate, deterministic=self.deterministic)
        normed = _norm(cfg, "pre_attention_layer_norm")(x)
        attention = MultiHeadAttention(cfg, self.deterministic, name="attention")
        x = _constrain(x + dropout(attention(normed, normed, bias, mask)), ("batch", "length", "embed"))
        normed = _norm(cfg, "pre_mlp_layer_norm")(x)
        x = x + dropout(MlpBlock(cfg, self.deterministic, name="mlp")(normed))
        return _constrain(x, ("batch", "length", "embed")), None  # (carry, output) for nn.scan


class DecoderLayer(nn.Module):
    config: T5Config
    deterministic: bool = True
    decode: bool = False

    @nn.compact
    def __call__(
        self,
        x: Array,
        encoded: Array,
        self_bias: Array,
        self_mask: Array,
        cross_mask: Array,
        decode_position: Array | None,
    ) -> tuple[Array, None]:
        cfg = self.config
        dropout = nn.Dropout(cfg.dropout_rate, deterministic=self.deterministic)
        normed = _norm(cfg, "pre_self_attention_layer_norm")(x)
        attention = MultiHeadAttention(cfg, self.deterministic, self.decode, name="self_attention")
        x = x + dropout(attention(normed, normed, self_bias, self_mask, decode_position))
        x = _constrain(x, ("batch", "length", "embed"))
        normed = _norm(cfg, "pre_cross_attention_layer_norm")(x)
        cross = MultiHeadAttention(cfg, self.deterministic, name="encoder_decoder_attention")
        x = _constrain(x + dropout(cross(normed, encoded, None, cross_mask)), ("batch", "length", "embed"))
        normed = _norm(cfg, "pre_mlp_layer_norm")(x)
        x = x + dropout(MlpBlock(cfg, self.deterministic, name="mlp")(normed))
        return _constrain(x, ("batch", "length", "embed")), None


def _layer_stack(layer_cls: type[nn.Module], cfg: T5Config, num_layers: int, num_inputs: int, **attributes: Any):
    """`num_layers` copies of `layer_cls` as a callable `(x, *inputs) -> x`: a Python loop, or one nn.scan.

    Rematerialization wraps each layer; scanning stacks parameters on a leading `layers` axis and the
    decoder cache on axis 1, so every cache array keeps the batch as its leading axis.
    """
    if cfg.remat_policy != "none":
        layer_cls = nn.remat(layer_cls, policy=_REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
        scanned = nn.scan(
            layer_cls,
            variable_axes={"params": 0, "cache": 1},
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast,) * num_inputs,
            length=num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(cfg, name="layers", **attributes)
        return lambda x, *inputs: scanned(x, *inputs)[0]
    layers = [layer_cls(cfg, name=f"layers_{i}", **attributes) for i in range(num_layers)]

    def run(x: Array, *inputs: Any) -> Array:
        for layer in layers:
            x = layer(x, *inputs)[0]
        return x

    return run


def attention_mask(
    query_valid: Array | None,
    key_valid: Array,
    query_segments: Array | None = None,
    key_segments: Array | None = None,
    causal: bool = False,
) -> Array:
    """(batch, 1, q, k) boolean mask: valid keys, same packed segment, and (causal) no look-ahead.

    Only keys are masked for padding (a padded query's output is never used), so a padded row never
    becomes fully masked; `query_valid` is accepted for symmetry and applied when given.
    """
    mask = key_valid[:, None, None, :]
    if query_valid is not None:
        mask = mask & query_valid[:, None, :, None]
    if query_segments is not None and key_segments is not None:
        mask = mask & (query_segments[:, None, :, None] == key_segments[:, None, None, :])
    if causal:  # self-attention: queries and keys are the same positions
        length = key_valid.shape[-1]
        mask = mask & jnp.tril(jnp.ones((length, length), jnp.bool_))[None, None]
    return mask


class Encoder(nn.Module):
    config: T5Config
    shared_embedding: TokenEmbedding

    @nn.compact
    def __call__(
        self,
        encoder_input_tokens: Array,
        encoder_mask: Array | None = None,
        encoder_segment_ids: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        cfg = self.config
        valid = encoder_input_tokens > PAD_ID if encoder_mask is None else encoder_mask.astype(jnp.bool_)
        mask = attention_mask(None, valid, encoder_segment_ids, encoder_segment_ids)
        positions = jnp.arange(encoder_input_tokens.shape[1])
        bias = RelativePositionBias(cfg, bidirectional=True, name="relpos_bias")(positions, positions)

        dropout = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)
        x = dropout(self.shared_embedding(encoder_input_tokens))
        x = _constrain(x, ("batch", "length", "embed"))
        stack = _layer_stack(EncoderLayer, cfg, cfg.num_encoder_layers, 2, deterministic=deterministic)
        x = stack(x, bias, mask)
        x = dropout(_norm(cfg, "encoder_norm")(x))
        return _constrain(x, ("batch", "length", "embed"))


class Decoder(nn.Module):
    """Decoder stack and output logits.

    With `decode=True` it keeps `cache/decoder/filled` (batch, length): which cache slots hold decoded
    tokens. The first call (no cache yet) creates the empty cache; each later call decodes one token
    at the first free slot, with the relative position bias and causal mask of that position.
    """

    config: T5Config
    shared_embedding: TokenEmbedding

    @nn.compact
    def __call__(
        self,
        encoded: Array,
        encoder_valid: Array,
        decoder_input_tokens: Array,
        decoder_target_tokens: Array | None = None,
        encoder_segment_ids: Array | None = None,
        decoder_segment_ids: Array | None = None,
        deterministic: bool = True,
        decode: bool = False,
        max_decode_length: int | None = None,
    ) -> Array:
        cfg = self.config
        relpos = RelativePositionBias(cfg, bidirectional=False, name="relpos_bias")
        batch, length = decoder_input_tokens.shape
        decode_position = None
        if decode and self.has_variable("cache", "filled"):
            filled = self.variable("cache", "filled", jnp.zeros, (batch, length), jnp.bool_)
            decode_position = jnp.sum(filled.value, axis=-1, dtype=jnp.int32)  # (batch,)
            key_positions = jnp.arange(filled.value.shape[1])
            self_bias = relpos(decode_position[:, None], jnp.broadcast_to(key_positions, filled.value.shape))
            self_mask = (key_positions[None, :] <= decode_position[:, None])[:, None, None, :]
            filled.value = filled.value | (key_positions[None, :] == decode_position[:, None])
            cross_mask = encoder_valid[:, None, None, :]
        else:
            if decode:  # first call: create the empty cache, as long as decoder_input_tokens
                if max_decode_length is not None and max_decode_length != length:
                    raise ValueError(
                        f"the cache is as long as decoder_input_tokens ({length}), not max_decode_length "
                        f"({max_decode_length}): initialize it with inputs of the full decoding length"
                    )
                self.variable("cache", "filled", jnp.zeros, (batch, length), jnp.bool_)
            positions = jnp.arange(length)
            self_bias = relpos(positions, positions)
            if decoder_target_tokens is not None:
                key_valid = decoder_target_tokens > PAD_ID
            elif decoder_segment_ids is not None:
                key_valid = decoder_segment_ids > 0
            else:
                key_valid = jnp.ones((batch, length), jnp.bool_)
            self_mask = attention_mask(None, key_valid, decoder_segment_ids, decoder_segment_ids, causal=True)
            cross_mask = attention_mask(None, encoder_valid, decoder_segment_ids, encoder_segment_ids)

        dropout = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)
        x = dropout(self.shared_embedding(decoder_input_tokens))
        x = _constrain(x, ("batch", "length", "embed"))
        stack = _layer_stack(
            DecoderLayer, cfg, cfg.num_decoder_layers, 5, deterministic=deterministic, decode=decode
        )
        x = stack(x, encoded, self_bias, self_mask, cross_mask, decode_position)
        x = dropout(_norm(cfg, "decoder_norm")(x))
        x = _constrain(x, ("batch", "length", "embed"))

        if cfg.tie_word_embeddings:
            logits = self.shared_embedding.attend(x * cfg.d_model**-0.5)
        else:
            dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
            # T5X init (std 1/sqrt(d_model)) rather than HF's std 1: from scratch the loss starts near log(vocab).
            logits = Projection(
                cfg.vocab_size, ("embed", "vocab"), cfg.d_model**-0.5, dtype, param_dtype, name="logits_dense"
            )(x)
        return _constrain(logits, ("batch", "length", "vocab"))


def encoder_valid_positions(encoder_input_tokens: Array | None, encoder_mask: Array | None) -> Array:
    """Which encoder positions the decoder may attend to: `encoder_mask` (1 = real) or else tokens != 0."""
    if encoder_mask is not None:
        return encoder_mask.astype(jnp.bool_)
    if encoder_input_tokens is None:
        raise ValueError("decode needs encoder_input_tokens or encoder_mask")
    return encoder_input_tokens > PAD_ID


class T5(nn.Module):
    """The encoder-decoder: `encode`, `decode` and `__call__` (teacher-forced logits)."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.token_embedder = TokenEmbedding(
            cfg.vocab_size, cfg.d_model, jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        )
        self.encoder = Encoder(cfg, self.token_embedder)
        self.decoder = Decoder(cfg, self.token_embedder)

    def encode(
        self,
        encoder_input_tokens: Array,
        encoder_mask: Array | None = None,
        encoder_segment_ids: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """(batch, length, d_model) encodings; `encoder_mask` (1 = real token) defaults to tokens != 0."""
        return self.encoder(encoder_input_tokens, encoder_mask, encoder_segment_ids, deterministic)

    def decode(
        self,
        encoded: Array,
        encoder_input_tokens: Array | None = None,
        decoder_input_tokens: Array | None = None,
        decoder_target_tokens: Array | None = None,
        encoder_segment_ids: Array | None = None,
        decoder_segment_ids: Array | None = None,
        decoder_positions: Array | None = None,
        encoder_mask: Array | None = None,
        deterministic: bool = True,
        decode: bool = False,
        max_decode_length: int | None = None,
    ) -> Array:
        """(batch, length, vocab) logits.

        The encoder padding comes from `encoder_mask` or else `encoder_input_tokens != 0`; decoder
        padding from `decoder_target_tokens != 0` (inputs start with the pad id 0, so they can't tell).
        Packed examples pass segment ids. `decoder_positions` is accepted for SeqIO's packed features
        but not needed: within a segment, relative offsets equal those of the positions. `decode=True`:
        see `Decoder`.
        """
        del decoder_positions
        if decoder_input_tokens is None:
            raise ValueError("decode needs decoder_input_tokens")
        encoder_valid = encoder_valid_positions(encoder_input_tokens, encoder_mask)
        return self.decoder(
            encoded, encoder_valid, decoder_input_tokens, decoder_target_tokens, encoder_segment_ids,
            decoder_segment_ids, deterministic, decode, max_decode_length,
        )  # fmt: skip

    def __call__(
        self,
        encoder_input_tokens: Array,
        decoder_input_tokens: Array,
        decoder_target_tokens: Array | None = None,
        encoder_segment_ids: Array | None = None,
        decoder_segment_ids: Array | None = None,
        encoder_positions: Array | None = None,
        decoder_positions: Array | None = None,
        deterministic: bool = True,
        decode: bool = False,
        max_decode_length: int | None = None,
    ) -> Array:
        """Teacher-forced logits (batch, target length, vocab) for SeqIO's enc-dec features."""
        del encoder_positions
        encoded = self.encode(encoder_input_tokens, None, encoder_segment_ids, deterministic)
        return self.decode(
            encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens, encoder_segment_ids,
            decoder_segment_ids, decoder_positions, None, deterministic, decode, max_decode_length,
        )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# Parameter layouts


def init_params(config: T5Config, rng: Array, batch_size: int = 1, input_length: int = 8, target_length: int = 8):
    """Boxed parameters (`nn.LogicallyPartitioned` leaves) of a fresh model; wrap in jax.eval_shape for shapes."""
    model = T5(config)
    encoder_tokens = jnp.ones((batch_size, input_length), jnp.int32)
    decoder_tokens = jnp.ones((batch_size, target_length), jnp.int32)
    return model.init({"params": rng}, encoder_tokens, decoder_tokens, decoder_tokens)["params"]


def count_params(params: Any) -> int:
    """Number of scalars in a (boxed or plain, concrete or abstract) parameter tree."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(nn.meta.unbox(params)))


def _layer_index(name: str) -> int | None:
    prefix = "layers_"
    return int(name[len(prefix) :]) if name.startswith(prefix) and name[len(prefix) :].isdigit() else None


def _stack(*arrays: Any) -> Any:
    """Stacks NumPy arrays with NumPy (conversion stays on the host), anything else with jax.numpy."""
    return np.stack(arrays) if all(isinstance(a, np.ndarray) for a in arrays) else jnp.stack(arrays)


def stack_layer_params(params: dict) -> dict:
    """Unscanned (`layers_0`, `layers_1`, ...) plain parameters -> the scanned layout (`layers`, stacked on axis 0)."""
    result = dict(params)
    for stack in ("encoder", "decoder"):
        if stack not in params:
            continue
        children = dict(params[stack])
        numbered = sorted((i, name) for name in children if (i := _layer_index(name)) is not None)
        if not numbered:
            continue
        layers = [children.pop(name) for _, name in numbered]
        children["layers"] = jax.tree_util.tree_map(_stack, *layers)
        result[stack] = children
    return result


def unstack_layer_params(params: dict) -> dict:
    """The scanned layout (`layers`, stacked on axis 0) -> unscanned (`layers_0`, `layers_1`, ...)."""
    result = dict(params)
    for stack in ("encoder", "decoder"):
        if stack not in params or "layers" not in params[stack]:
            continue
        children = dict(params[stack])
        stacked = children.pop("layers")
        count = jax.tree_util.tree_leaves(stacked)[0].shape[0]
        for i in range(count):
            children[f"layers_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
        result[stack] = children
    return result
