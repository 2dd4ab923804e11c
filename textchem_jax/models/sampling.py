"""Ancestral sampling with temperature, top-k and top-p (nucleus) filtering, over the decoder cache.

Why: sampled candidates (e.g. several per input for diversity, or round-trip checks) complement beam
search, and temperature 0 / top_k=1 give greedy decoding with log-probabilities for free.
Filters apply as in Hugging Face's warpers: logits / temperature, then top-k, then top-p on the
tempered distribution (the smallest set of most likely tokens whose mass reaches `top_p`; the most
likely token is always kept). Kept sets are chosen by rank, so ties never widen them.
The returned log-probabilities are the model's own (unfiltered, temperature 1), summed up to and
including EOS, as t5x's temperature sampler reports them. A sequence stops at EOS (pad 0 after it);
the loop stops when all have. Randomness: step `t` uses `fold_in(rng, t)`, so a key gives one result.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from textchem_jax.models.decoding import EOS_ID, START_ID, StepFn, encode_for_decoding, init_cache, make_step_fn
from textchem_jax.models.t5 import T5

Array = jax.Array
Cache = Any


def _keep_ranked(logits: Array, order: Array, keep_sorted: Array) -> Array:
    """Boolean (rows, vocab) mask from per-rank decisions `keep_sorted` for the token ids `order`."""
    rows = jnp.arange(logits.shape[0])[:, None]
    return jnp.zeros(logits.shape, jnp.bool_).at[rows, order].set(keep_sorted)


def filter_logits(logits: Array, *, top_k: int = 0, top_p: float = 1.0) -> Array:
    """(rows, vocab) logits with -inf outside the top-k, then outside the top-p nucleus (0 / 1.0: off)."""
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        _, order = jax.lax.top_k(logits, top_k)
        logits = jnp.where(_keep_ranked(logits, order, jnp.ones(order.shape, jnp.bool_)), logits, -jnp.inf)
    if top_p < 1.0:
        sorted_logits, order = jax.lax.top_k(logits, vocab)  # a full sort, best first
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        keep_sorted = (mass_before < top_p).at[:, 0].set(True)
        logits = jnp.where(_keep_ranked(logits, order, keep_sorted), logits, -jnp.inf)
    return logits


def sample_with_step(
    step: StepFn,
    cache: Cache,
    rng: Array,
    batch_size: int,
    *,
    max_decode_length: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: int = EOS_ID,
    min_decode_length: int = 0,
) -> tuple[Array, Array]:
    """(batch, length) sampled tokens (0 after EOS) and (batch,) their summed model log-probs.

    `temperature == 0` picks the most likely kept token (greedy when top_k/top_p are off).
    `min_decode_length` forbids EOS before that many tokens.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    length = max_decode_length

    def not_done(state):
        position, _, _, _, _, finished = state
        return (position < length) & ~jnp.all(finished)

    def advance(state):
        position, cache, tokens, sequences, log_prob, finished = state
        logits, cache = step(cache, tokens)
        logits = logits.astype(jnp.float32)
        model_log_probs = jax.nn.log_softmax(logits, axis=-1)
        if min_decode_length > 0:
            eos_logit = jnp.where(position >= min_decode_length, logits[:, eos_id], -jnp.inf)
            logits = logits.at[:, eos_id].set(eos_logit)
        if temperature == 0:
            filtered = filter_logits(logits, top_k=top_k, top_p=top_p)
            chosen = jnp.argmax(filtered, axis=-1).astype(jnp.int32)
        else:
            filtered = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
            chosen = jax.random.categorical(jax.random.fold_in(rng, position), filtered, axis=-1).astype(jnp.int32)
        chosen = jnp.where(finished, 0, chosen)
        token_log_prob = jnp.take_along_axis(model_log_probs, chosen[:, None], axis=-1)[:, 0]
        log_prob = log_prob + jnp.where(finished, 0.0, token_log_prob)
        sequences = jax.lax.dynamic_update_slice(sequences, chosen[:, None], (0, position))
        return position + 1, cache, chosen, sequences, log_prob, finished | (chosen == eos_id)

    state = (
        jnp.int32(0),
        cache,
        jnp.full((batch_size,), START_ID, jnp.int32),
        jnp.zeros((batch_size, length), jnp.int32),
        jnp.zeros((batch_size,), jnp.float32),
        jnp.zeros((batch_size,), jnp.bool_),
    )
    _, _, _, sequences, log_prob, _ = jax.lax.while_loop(not_done, advance, state)
    return sequences, log_prob


@functools.partial(
    jax.jit,
    static_argnames=(
        "model", "max_decode_length", "num_samples", "temperature", "top_k", "top_p", "eos_id", "min_decode_length",
    ),
)  # fmt: skip
def sample(
    model: T5,
    params: Any,
    encoder_input_tokens: Array,
    rng: Array,
    *,
    max_decode_length: int,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: int = EOS_ID,
    min_decode_length: int = 0,
    input_domain: Array | None = None,
) -> tuple[Array, Array]:
    """`num_samples` samples per encoder input (padded with 0): sequences (batch, num_samples, length)
    without the start token, 0 after EOS, and their model log-probs (batch, num_samples).

    The encoder runs once per example; its output is repeated per sample.
    """
    encoder_input_tokens = jnp.asarray(encoder_input_tokens, jnp.int32)
    batch_size = encoder_input_tokens.shape[0]
    model, encoded = encode_for_decoding(model, params, encoder_input_tokens, input_domain)
    rows = batch_size * num_samples
    step = make_step_fn(
        model, params, jnp.repeat(encoded, num_samples, axis=0), jnp.repeat(encoder_input_tokens, num_samples, axis=0)
    )
    sequences, log_probs = sample_with_step(
        step, init_cache(model, rows, max_decode_length), rng, rows, max_decode_length=max_decode_length,
        temperature=temperature, top_k=top_k, top_p=top_p, eos_id=eos_id, min_decode_length=min_decode_length,
    )  # fmt: skip
    return sequences.reshape(batch_size, num_samples, -1), log_probs.reshape(batch_size, num_samples)
