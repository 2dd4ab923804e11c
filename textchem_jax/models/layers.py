"""The building blocks of T5 in Flax linen: RMS norm, bias-free projection, shared token embedding,
relative position bias, attention (with a decoding cache), MLP, attention masks.

They sit below `textchem_jax.models.t5` because T5 and e2-CLM compose the same layers: e2-CLM's
aggregator and routing reuse them (and T5's Encoder and Decoder) with the same parameter and logical
axis names (`vocab, embed, mlp, heads, kv, joined_kv, relpos_buckets`), so checkpoints and Hugging Face
conversion see one layout.
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


def rows_dot(spec: str, x: Array, weight: Array) -> Array:
    """`jnp.einsum(spec, ...)` over `x`'s rows, its leading axes merged into one, so that the weight's gradient
    is one 2-D dot contracting the rows. With (batch, length) kept apart, XLA's CPU backend first copied the
    gradient to (features, batch, length): 131 MB for T5-small's logits, and a dot on the copy that ran at
    half speed. Merged, T5-small's train step was faster in 5 of 5 alternating pairs (3,390 -> 3,173 ms in the
    quietest) and `benchmarks/train_bench.py` read 3,254 -> 3,080 ms."""
    y = jnp.einsum(spec, x.reshape(-1, x.shape[-1]), weight)
    return y.reshape(*x.shape[:-1], y.shape[-1])


class Projection(nn.Module):
    """A bias-free dense layer `x @ kernel` whose 2-D kernel has logical axes `axes` (input, output)."""

    features: int
    axes: tuple[str, str]
    stddev: float
    dtype: Any
    param_dtype: Any

    @nn.compact
    def kernel(self, in_features: int) -> Array:
        """The (in_features, features) kernel in the compute dtype, for callers that join projections."""
        kernel = self.param(
            "kernel", nn.with_logical_partitioning(_normal(self.stddev), self.axes), (in_features, self.features),
            self.param_dtype,
        )  # fmt: skip
        return kernel.astype(self.dtype)

    def __call__(self, x: Array) -> Array:
        return rows_dot("nd,df->nf", x.astype(self.dtype), self.kernel(x.shape[-1]))


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
        return rows_dot("nd,vd->nv", x.astype(self.dtype), self.embedding.astype(self.dtype))


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


def attend_history(query: Array, key: Array, value: Array, bias: Array, ancestors: Array) -> Array:
    """One new query per row against the decoder's cache: context (rows, 1, heads, kv).

    query (rows, heads, 1, kv), rows example-major (row = input * n + j); the cache per input: key
    (heads, inputs, kv, length, n), value (heads, inputs, length, n, kv), slot `s` of a row written by that
    row at step `s`; bias (1 or rows, heads, 1, length) additive, masking unwritten slots. `ancestors`
    (inputs, n, length): the row whose slot `s` holds the history of each row, for beam search, whose
    beams change rows at every step. Each row's scores are taken against all n rows of its input and the
    ancestor's kept, so the cache is read once and never moved (gathering it to follow the beams moved
    500 MB a step at T5-small, 10 beams, 128 tokens). Keys are stored transposed so the scores are one
    (n, kv) x (kv, length * n) product per input and head, which XLA's CPU dots run 1.8x faster than
    its transpose; rows are the innermost axis so that a step's write is n contiguous entries.
    """
    heads, inputs, kv, length, n = key.shape
    q = query.reshape(inputs, n, heads, kv).transpose(2, 0, 1, 3)  # (heads, inputs, row, kv)
    every = jnp.einsum("higd,hidk->higk", q, key.reshape(heads, inputs, kv, length * n))
    every = every.reshape(heads, inputs, n, length, n).astype(jnp.float32)  # (h, i, row, slot, ancestor row)
    chosen = ancestors[..., None] == jnp.arange(n)  # (i, row, slot, ancestor row)
    scores = jnp.sum(jnp.where(chosen, every, 0.0), axis=-1)  # exactly one term: (h, i, row, slot)
    scores = scores.transpose(1, 2, 0, 3).reshape(inputs * n, heads, 1, length) + bias
    weights = jax.nn.softmax(scores, axis=-1).astype(value.dtype).reshape(inputs, n, heads, length)
    weights = weights.transpose(2, 0, 1, 3)[..., None]  # (h, i, row, slot, 1): small, unlike `spread`
    spread = jnp.where(chosen, weights, 0).reshape(heads, inputs, n, length * n)
    context = jnp.einsum("higk,hikd->higd", spread, value.reshape(heads, inputs, length * n, kv))
    return context.transpose(1, 2, 0, 3).reshape(inputs * n, 1, heads, kv)


class MultiHeadAttention(nn.Module):
    """T5 attention without 1/sqrt(d_kv) scaling; softmax in float32.

    For decoder self-attention with `decode=True`, keys and values live in the "cache" collection
    (`cached_key`, `cached_value`: per input, see `attend_history`), sized by `ancestors` (inputs, n rows
    each, length). On the first (initializing) call they are created empty; on later calls
    (`decode_position` given) every row's new key and value are written at that slot and
    `attend_history` reads the cache (with beam search's `ancestors`).

    `inputs_kv` may instead be keys and values already projected, keys (batch, heads, kv, length) and
    values (batch, heads, length, kv), fewer rows than the queries: decoding's cross-attention
    (`t5.cross_attention_kv`), computed once per input and shared by its beams or samples, whose queries
    are folded into that input's row (rows are example-major). Kept per beam in the cache instead, every
    step would gather them to follow the beams. Keys come transposed because XLA's CPU dots then run the
    scores 2x faster (0.34 against 0.73 ms at 80 rows, 256 inputs).
    """

    config: T5Config
    deterministic: bool = True
    decode: bool = False

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array | tuple[Array, Array],
        bias: Array | None,
        mask: Array | None,
        decode_position: Array | None = None,
        ancestors: Array | None = None,
    ) -> Array:
        cfg = self.config
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

        def project(name: str, stddev: float) -> Projection:
            return Projection(cfg.inner_dim, ("embed", "joined_kv"), stddev, dtype, param_dtype, name=name)

        def split_heads(x: Array) -> Array:  # (batch, length, heads * kv) -> (batch, heads, length, kv)
            x = x.reshape(*x.shape[:2], cfg.num_heads, cfg.d_kv).transpose(0, 2, 1, 3)
            return _constrain(x, ("batch", "heads", "length", "kv"))

        out = Projection(cfg.d_model, ("joined_kv", "embed"), cfg.inner_dim**-0.5, dtype, param_dtype, name="out")
        projections = (
            project("query", (cfg.d_model * cfg.d_kv) ** -0.5), project("key", cfg.d_model**-0.5),
            project("value", cfg.d_model**-0.5),
        )  # fmt: skip
        if self.decode and inputs_kv is inputs_q:
            # one dot for all three: at decoding's few rows three dots take longer (0.80 against 0.56 s of a
            # T5-small beam decode); XLA hoists the kernels' concatenation out of the decoding loop
            kernels = jnp.concatenate([p.kernel(inputs_q.shape[-1]) for p in projections], axis=1)
            joined = jnp.einsum("...d,df->...f", inputs_q.astype(dtype), kernels)
            query, key, value = (split_heads(x) for x in jnp.split(joined, 3, axis=-1))
        else:
            query = split_heads(projections[0](inputs_q))
            if isinstance(inputs_kv, tuple):
                key, value = inputs_kv
            else:
                key, value = (split_heads(p(inputs_kv)) for p in projections[1:])

        if self.decode:  # the cache per input, as `attend_history` reads it; `ancestors` sizes it
            inputs, n, length = ancestors.shape
            heads, kv = cfg.num_heads, cfg.d_kv
            cached_key = self.variable("cache", "cached_key", jnp.zeros, (heads, inputs, kv, length, n), key.dtype)
            cached_value = self.variable("cache", "cached_value", jnp.zeros, (heads, inputs, length, n, kv), value.dtype)
            if decode_position is not None:
                if query.shape[2] != 1:
                    raise ValueError(f"cached decoding takes one token per step, got {query.shape[2]}")
                key = key.reshape(inputs, n, heads, kv).transpose(2, 0, 3, 1)[:, :, :, None]  # (h, i, kv, 1, n)
                value = value.reshape(inputs, n, heads, kv).transpose(2, 0, 1, 3)[:, :, None]  # (h, i, 1, n, kv)
                # rows decode in lockstep: one slice update per step, not a pass over the cache
                update = jax.lax.dynamic_update_slice_in_dim
                key = cached_key.value = update(cached_key.value, key, decode_position, axis=3)
                value = cached_value.value = update(cached_value.value, value, decode_position, axis=2)
                key = _constrain(key, ("heads", "batch", "kv", "length", None))
                value = _constrain(value, ("heads", "batch", "length", None, "kv"))
                context = attend_history(query, key, value, bias, ancestors)
                return out(context.reshape(query.shape[0], 1, cfg.inner_dim))

        rows, heads, query_length, kv = query.shape
        if key.shape[0] != rows:  # the rows of one input share its keys: its queries, side by side
            inputs = key.shape[0]
            query = query.reshape(inputs, -1, heads, query_length, kv).transpose(0, 2, 1, 3, 4)
            query = query.reshape(inputs, heads, -1, kv)
        key_axes = "bhdk" if isinstance(inputs_kv, tuple) else "bhkd"  # projected keys come transposed
        scores = jnp.einsum(f"bhqd,{key_axes}->bhqk", query, key).astype(jnp.float32)
        if bias is not None:
            scores = scores + bias
        if mask is not None:
            scores = jnp.where(mask, scores, _MASKED)
        weights = jax.nn.softmax(scores, axis=-1).astype(dtype)
        weights = nn.Dropout(cfg.dropout_rate, deterministic=self.deterministic)(weights)
        # (batch, heads, q, kv) then transposed: XLA's CPU dot writing (batch, q, heads, kv) directly is 2-4x slower
        context = jnp.einsum("bhqk,bhkd->bhqd", weights, value).transpose(0, 2, 1, 3)
        context = _constrain(context, ("batch", "length", "heads", "kv"))
        return out(context.reshape(rows, -1, cfg.inner_dim))


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
            hidden = _relu(wi("wi"))
        else:
            hidden = jax.nn.gelu(wi("wi_0"), approximate=True) * wi("wi_1")
        hidden = nn.Dropout(cfg.dropout_rate, deterministic=self.deterministic)(hidden)
        return Projection(cfg.d_model, ("mlp", "embed"), cfg.d_ff**-0.5, dtype, param_dtype, name="wo")(hidden)


def _relu(x: Array) -> Array:
    """ReLU as a select: XLA's CPU backend then keeps it out of the YNNPACK fusion of the two MLP matmuls
    around it, which runs 1.5x slower with `max(x, 0)` inside (80 rows: 2.4 ms against 1.6 ms)."""
    return jnp.where(x > 0, x, jnp.zeros((), x.dtype))


def unfused(x: Array) -> Array:
    """`x` unchanged, as an op that XLA cannot fold into the dot that made `x`.

    At decoding's few rows (80: 8 inputs x 10 beams) XLA's CPU backend runs a dot with its elementwise
    epilogue (the residual add) fused into one YNNPACK call 1.7x slower than the dot alone (T5-small MLP
    out: 1.29 against 0.77 ms, 0.85 ms with the add apart); at training's thousands of rows the fused
    epilogue costs little (4% at 2,048 rows). A reduce-precision to `x`'s own format is exact; an
    optimization barrier would not do, since XLA removes it before fusing.
    """
    finfo = jnp.finfo(x.dtype)
    return jax.lax.reduce_precision(x, exponent_bits=finfo.nexp, mantissa_bits=finfo.nmant)


def _norm(cfg: T5Config, name: str) -> RMSNorm:
    return RMSNorm(cfg.layer_norm_epsilon, jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype), name=name)


def masked_bias(bias: Array | None, mask: Array) -> Array:
    """One additive float32 term for attention scores: `bias` (or 0) where `mask` allows, the masked score
    elsewhere. Made once per stack, it saves every layer a select over its scores, forward and backward."""
    return jnp.where(mask, jnp.float32(0.0) if bias is None else bias, _MASKED)


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
