"""Autoregressive decoding with the decoder's key/value cache.

The pieces search strategies share: `init_cache` (an empty cache; all zeros is a valid empty cache),
`make_step_fn` (`step(cache, tokens) -> (logits, cache)`: one token per sequence in, next-token logits
out) and `map_cache_batch` (apply a function along the batch axis of every cache array, e.g. to expand
or reorder beams; every cache array has the batch as its leading axis, scanned or not).
`greedy_decode` is the simplest search on top of them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from textchem_jax.models.t5 import T5

Array = jax.Array
Cache = Any
StepFn = Callable[[Cache, Array], tuple[Array, Cache]]

START_ID = 0  # T5 starts decoding with the pad id
EOS_ID = 1


def init_cache(model: T5, batch_size: int, max_decode_length: int) -> Cache:
    """The empty "cache" collection for `batch_size` sequences of up to `max_decode_length` tokens."""
    d_model = model.config.d_model

    def create():
        tokens = jnp.zeros((batch_size, max_decode_length), jnp.int32)
        encoded = jnp.zeros((batch_size, 1, d_model), jnp.dtype(model.config.dtype))
        variables = model.init(
            jax.random.key(0), encoded, jnp.ones((batch_size, 1), jnp.int32), tokens, decode=True, method=T5.decode
        )
        return variables["cache"]

    shapes = jax.eval_shape(create)  # no parameters are materialized
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def encode_for_decoding(model: Any, params: Any, encoder_input_tokens: Array, input_domain: Array | None = None):
    """(the T5 whose decoder runs the steps, the encodings) for T5 and e2-CLM models alike.

    e2-CLM encodes with its domain encoders (routed by `input_domain`) and decodes exactly as T5 does: its
    decoder-side parameters carry T5's names, so every search strategy serves both.
    """
    config = getattr(model, "config", None)
    if hasattr(config, "t5"):  # an E2ClmConfig
        from textchem_jax.models.e2clm import E2Clm, decoder_model

        encoded = model.apply({"params": params}, encoder_input_tokens, input_domain=input_domain, method=E2Clm.encode)
        return decoder_model(config), encoded
    return model, model.apply({"params": params}, encoder_input_tokens, method=T5.encode)


def map_cache_batch(fn: Callable[[Array], Array], cache: Cache) -> Cache:
    """`fn` applied to every cache array; each has the batch as axis 0 (e.g. repeat for beams, gather)."""
    return jax.tree_util.tree_map(fn, cache)


def make_step_fn(
    model: T5, params: Any, encoded: Array, encoder_input_tokens: Array, encoder_mask: Array | None = None
) -> StepFn:
    """`step(cache, tokens)`: tokens (batch,) of the current position -> (logits (batch, vocab) float32, cache)."""

    def step(cache: Cache, tokens: Array) -> tuple[Array, Cache]:
        logits, variables = model.apply(
            {"params": params, "cache": cache},
            encoded,
            encoder_input_tokens,
            tokens[:, None],
            encoder_mask=encoder_mask,
            decode=True,
            deterministic=True,
            method=T5.decode,
            mutable=["cache"],
        )
        return logits[:, -1, :].astype(jnp.float32), variables["cache"]

    return step


def greedy_search(
    step: StepFn, cache: Cache, batch_size: int, max_decode_length: int, eos_id: int = EOS_ID
) -> Array:
    """(batch, max_decode_length) argmax tokens, EOS included, zeros after it; stops once all hit EOS."""

    def not_done(state):
        position, _, _, _, finished = state
        return (position < max_decode_length) & ~jnp.all(finished)

    def advance(state):
        position, cache, tokens, sequences, finished = state
        logits, cache = step(cache, tokens)
        next_tokens = jnp.where(finished, 0, jnp.argmax(logits, axis=-1).astype(jnp.int32))
        sequences = jax.lax.dynamic_update_slice(sequences, next_tokens[:, None], (0, position))
        return position + 1, cache, next_tokens, sequences, finished | (next_tokens == eos_id)

    state = (
        jnp.int32(0),
        cache,
        jnp.full((batch_size,), START_ID, jnp.int32),
        jnp.zeros((batch_size, max_decode_length), jnp.int32),
        jnp.zeros((batch_size,), jnp.bool_),
    )
    return jax.lax.while_loop(not_done, advance, state)[3]


@functools.partial(jax.jit, static_argnames=("model", "max_decode_length", "eos_id"))
def greedy_decode(
    model: T5, params: Any, encoder_input_tokens: Array, max_decode_length: int, eos_id: int = EOS_ID
) -> Array:
    """Greedy decoding of a batch of encoder inputs (padded with 0): (batch, max_decode_length) tokens."""
    encoder_input_tokens = jnp.asarray(encoder_input_tokens, jnp.int32)
    batch_size = encoder_input_tokens.shape[0]
    encoded = model.apply({"params": params}, encoder_input_tokens, method=T5.encode)
    step = make_step_fn(model, params, encoded, encoder_input_tokens)
    return greedy_search(step, init_cache(model, batch_size, max_decode_length), batch_size, max_decode_length, eos_id)
