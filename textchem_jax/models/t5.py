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
collection and advances one token per call: see `adapters.EncoderDecoderModel.decoding_start`.

The building blocks (norm, projections, embedding, relative position bias, attention, MLP, masks) live
in `textchem_jax.models.layers`, shared with e2-CLM; this module composes them into layers and stacks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from textchem_jax.models.config import T5Config
from textchem_jax.models.layers import (
    _REMAT_POLICIES,
    PAD_ID,
    MlpBlock,
    MultiHeadAttention,
    Projection,
    RelativePositionBias,
    TokenEmbedding,
    _constrain,
    _norm,
    attention_mask,
    masked_bias,
    unfused,
)

Array = jax.Array


class EncoderLayer(nn.Module):
    config: T5Config
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: Array, bias: Array) -> tuple[Array, None]:
        cfg = self.config
        dropout = nn.Dropout(cfg.dropout_rate, deterministic=self.deterministic)
        normed = _norm(cfg, "pre_attention_layer_norm")(x)
        attention = MultiHeadAttention(cfg, self.deterministic, name="attention")
        x = _constrain(x + dropout(attention(normed, normed, bias, None)), ("batch", "length", "embed"))
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
        encoded: Array | tuple[Array, Array],
        self_bias: Array,
        cross_bias: Array,
        decode_position: Array | None,
        ancestors: Array | None,
    ) -> tuple[Array, None]:
        cfg = self.config
        dropout = nn.Dropout(cfg.dropout_rate, deterministic=self.deterministic)
        # decoding's residual adds stay out of the sublayers' last dots (see `layers.unfused`)
        sublayer_out = (lambda y: unfused(dropout(y))) if self.decode else dropout
        normed = _norm(cfg, "pre_self_attention_layer_norm")(x)
        attention = MultiHeadAttention(cfg, self.deterministic, self.decode, name="self_attention")
        x = x + sublayer_out(attention(normed, normed, self_bias, None, decode_position, ancestors))
        x = _constrain(x, ("batch", "length", "embed"))
        normed = _norm(cfg, "pre_cross_attention_layer_norm")(x)
        cross = MultiHeadAttention(cfg, self.deterministic, name="encoder_decoder_attention")
        x = _constrain(x + sublayer_out(cross(normed, encoded, cross_bias, None)), ("batch", "length", "embed"))
        normed = _norm(cfg, "pre_mlp_layer_norm")(x)
        x = x + sublayer_out(MlpBlock(cfg, self.deterministic, name="mlp")(normed))
        return _constrain(x, ("batch", "length", "embed")), None


def _layer_stack(layer_cls: type[nn.Module], cfg: T5Config, num_layers: int, in_axes: tuple, **attributes: Any):
    """`num_layers` copies of `layer_cls` as a callable `(x, *inputs) -> x`: a Python loop, or one nn.scan.

    `in_axes` has one entry per input: `nn.broadcast` (every layer sees it whole) or 0 (layer i takes
    entry i: of a sequence of per-layer entries in a loop, of the leading axis of every array when
    scanned). Rematerialization wraps each layer; scanning stacks parameters on a leading `layers` axis
    and the decoder cache on axis 1 (each layer's cache arrays are heads-first, see `layers.attend_history`).
    """
    if cfg.remat_policy != "none":
        layer_cls = nn.remat(layer_cls, policy=_REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
        scanned = nn.scan(
            layer_cls,
            variable_axes={"params": 0, "cache": 1},
            split_rngs={"params": True, "dropout": True},
            in_axes=in_axes,
            length=num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(cfg, name="layers", **attributes)
        return lambda x, *inputs: scanned(x, *inputs)[0]
    layers = [layer_cls(cfg, name=f"layers_{i}", **attributes) for i in range(num_layers)]

    def run(x: Array, *inputs: Any) -> Array:
        for i, layer in enumerate(layers):
            layer_inputs = [
                value if axis is nn.broadcast else value[i]  # a sequence of per-layer entries
                for value, axis in zip(inputs, in_axes, strict=True)
            ]
            x = layer(x, *layer_inputs)[0]
        return x

    return run


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
        stack = _layer_stack(EncoderLayer, cfg, cfg.num_encoder_layers, (nn.broadcast,), deterministic=deterministic)
        x = stack(x, masked_bias(bias, mask))  # the mask folded into the bias once, not per layer
        x = dropout(_norm(cfg, "encoder_norm")(x))
        return _constrain(x, ("batch", "length", "embed"))


class Decoder(nn.Module):
    """Decoder stack and output logits.

    With `decode=True` it keeps `cache/decoder/position` (how many tokens every row decoded: rows step in
    lockstep) and `cache/decoder/ancestors` (inputs, n, length): for each row and slot, which of its input's
    n rows holds that slot of its history. The first call (no cache yet) creates the empty cache, as long
    as `decoder_input_tokens`, for n rows per input: `parents`' shape (inputs, n) when given, else one. Each
    later call decodes one token per row at the next slot, with the relative position bias and causal
    mask of that position, and takes as `encoded` the `cross_attention_kv` of the encodings (per input,
    not per decoded row). `parents` (inputs, n): row j of each input continues its row `parents[., j]`
    of the last step (beam search); the ancestry follows it, the cache itself never moves. None: every
    row continues itself.
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
        parents: Array | None = None,
    ) -> Array:
        cfg = self.config
        relpos = RelativePositionBias(cfg, bidirectional=False, name="relpos_bias")
        batch, length = decoder_input_tokens.shape
        decode_position = ancestors = None
        if decode and self.has_variable("cache", "position"):
            position = self.variable("cache", "position")  # both exist: the first call made them
            history = self.variable("cache", "ancestors")
            decode_position = position.value
            n, cache_length = history.value.shape[1:]
            key_positions = jnp.arange(cache_length)
            self_bias = relpos(decode_position[None], key_positions)  # (1, heads, 1, length)
            self_mask = (key_positions <= decode_position)[None, None, None, :]
            position.value = decode_position + 1
            ancestors = history.value
            if parents is not None:
                ancestors = jnp.take_along_axis(ancestors, parents[..., None], axis=1)
            ancestors = jnp.where(key_positions == decode_position, jnp.arange(n)[:, None], ancestors)
            history.value = ancestors
            cross_mask = encoder_valid[:, None, None, :]
        else:
            if decode:  # first call: create the empty cache, as long as decoder_input_tokens
                if max_decode_length is not None and max_decode_length != length:
                    raise ValueError(
                        f"the cache is as long as decoder_input_tokens ({length}), not max_decode_length "
                        f"({max_decode_length}): initialize it with inputs of the full decoding length"
                    )
                inputs, n = (batch, 1) if parents is None else parents.shape
                self.variable("cache", "position", jnp.zeros, (), jnp.int32)
                ancestors = self.variable("cache", "ancestors", jnp.zeros, (inputs, n, length), jnp.int32).value
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
        per_layer = not hasattr(encoded, "shape")  # cross_attention_kv: layer i attends to entry i
        in_axes = (0 if per_layer else nn.broadcast,) + (nn.broadcast,) * 4
        stack = _layer_stack(
            DecoderLayer, cfg, cfg.num_decoder_layers, in_axes, deterministic=deterministic, decode=decode
        )
        x = stack(x, encoded, masked_bias(self_bias, self_mask), masked_bias(None, cross_mask), decode_position, ancestors)
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


def cross_attention_kv(params: Any, config: T5Config, encoded: Array) -> list[tuple[Array, Array]] | tuple[Array, Array]:
    """Every decoder layer's cross-attention keys (batch, heads, kv, length) and values (batch, heads,
    length, kv) of `encoded` (batch, length, d_model): a list of (key, value) per layer, or for scanned
    layers both stacked on a leading layers axis. Decoding computes them once per input, since they are
    the same at every step and for every beam or sample of that input (`T5.decode` takes them in place of
    `encoded`; `MultiHeadAttention` says why keys come transposed)."""
    decoder = nn.meta.unbox(params)["decoder"]
    dtype = jnp.dtype(config.dtype)

    def project(attention: dict) -> tuple[Array, Array]:  # Projection's `x @ kernel`, kernels (..., d, f)
        def heads(kernel: Array) -> Array:  # (..., batch, heads, length, kv)
            projected = jnp.einsum("bld,...df->...blf", encoded.astype(dtype), kernel.astype(dtype))
            return projected.reshape(*projected.shape[:-1], config.num_heads, config.d_kv).swapaxes(-3, -2)

        return heads(attention["key"]["kernel"]).swapaxes(-2, -1), heads(attention["value"]["kernel"])

    if config.scan_layers:
        return project(decoder["layers"]["encoder_decoder_attention"])
    return [project(decoder[f"layers_{i}"]["encoder_decoder_attention"]) for i in range(config.num_decoder_layers)]


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
        parents: Array | None = None,
    ) -> Array:
        """(batch, length, vocab) logits.

        `encoded`: the encoder's output, or when decoding step by step its `cross_attention_kv`. The
        encoder padding comes from `encoder_mask` or else `encoder_input_tokens != 0`; decoder padding from `decoder_target_tokens != 0` (inputs start with the pad id 0, so they can't tell).
        Packed examples pass segment ids. `decoder_positions` is accepted for SeqIO's packed features
        but not needed: within a segment, relative offsets equal those of the positions. `decode=True`:
        see `Decoder` (also for `parents`).
        """
        del decoder_positions
        if decoder_input_tokens is None:
            raise ValueError("decode needs decoder_input_tokens")
        encoder_valid = encoder_valid_positions(encoder_input_tokens, encoder_mask)
        return self.decoder(
            encoded, encoder_valid, decoder_input_tokens, decoder_target_tokens, encoder_segment_ids,
            decoder_segment_ids, deterministic, decode, max_decode_length, parents,
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


def insert_vocabulary_rows(params: dict, config: T5Config, at: int, count: int, vocab_size: int) -> tuple[dict, T5Config]:
    """Plain parameters and config with `count` new token rows inserted at id `at` (pieces added to the
    vocabulary: ids >= `at`, e.g. T5's sentinels, move up by `count`), then resized to `vocab_size` rows
    by dropping or adding unused padding rows at the end. New rows are the mean of the old token rows,
    so the model's outputs for old tokens are unchanged (tied logits and the v1.1 `logits_dense` alike)."""
    def grow(matrix: np.ndarray, axis: int) -> np.ndarray:
        matrix = np.asarray(matrix)
        rows = np.moveaxis(matrix, axis, 0)
        new = np.repeat(rows[:at].mean(axis=0, keepdims=True), count, axis=0).astype(rows.dtype)
        grown = np.concatenate([rows[:at], new, rows[at:]])  # old sentinels and padding move up
        if len(grown) > vocab_size:
            grown = grown[:vocab_size]  # only padding rows, never an id in use, are dropped
        elif len(grown) < vocab_size:
            padding = np.repeat(new[:1], vocab_size - len(grown), axis=0)
            grown = np.concatenate([grown, padding])
        return np.moveaxis(grown, 0, axis)

    params = {**params, "token_embedder": {"embedding": grow(params["token_embedder"]["embedding"], 0)}}
    if not config.tie_word_embeddings:
        dense = params["decoder"]["logits_dense"]
        params["decoder"] = {**params["decoder"], "logits_dense": {**dense, "kernel": grow(dense["kernel"], 1)}}
    return params, dataclasses.replace(config, vocab_size=vocab_size)

