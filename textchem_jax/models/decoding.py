"""The decoding core: searches that know no model, only a step function over a key/value cache.

A search receives `start(n) -> (step, new_cache)` from the model side (`adapters.EncoderDecoderModel.
predict_batch`: encode once) and calls it with the number of rows it wants per input (beams, samples).
`new_cache(length)` is an empty cache for those rows holding `length` decoded tokens; `step(cache, tokens,
parents=None) -> (logits, cache)` takes the current token of every row (example-major: row = example * n + j)
and returns next-token logits; `parents` (batch, n) says which row of the last step each row continues
(beam search: the surviving beams), None that every row continues itself. The model follows parents in
its cache as it likes (T5 keeps an ancestry table rather than moving the cache).

The history grows in segments (`history_lengths`: 32, 64, 128, ... slots): each step attends over its
segment's cache, not the maximum length, so early steps and short outputs cost what they use, as
Hugging Face's growing cache does, while every loop keeps static shapes (`while_growing`). Every search
returns (sequences (batch, k, max_decode_length) without the start token and 0 after EOS, scores (batch,
k), best first for beams), so evaluation and inference never ask which search they hold; gin swaps them
(`decode_fn = @decoding.temperature_sample`, `@beam_search.beam_search`).

Greedy decoding is `temperature_sample` at temperature 0 (`greedy`), not a function of its own.
Sampling filters as Hugging Face's warpers: logits / temperature, then top-k, then top-p (nucleus) on
the tempered distribution, the most likely token always kept, kept sets chosen by rank so ties never
widen them. Scores are the model's own summed log-probabilities (temperature 1, unfiltered) up to and
including EOS, as t5x's sampler reports them. Step `t` draws with `fold_in(rng, t)`: a key gives one result.
Each row draws its own noise, numbered by its place in the batch (JAX's partitionable threefry), so the rows a
mesh's `data` axis pads a batch with change no real row's samples: one device and a mesh sample alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
Cache = Any
StepFn = Callable[..., tuple[Array, Cache]]  # (cache, tokens, parents=None) -> (logits, cache)
NewCache = Callable[[int], Cache]  # decoded tokens it holds -> empty cache
Start = Callable[[int], tuple[StepFn, NewCache]]  # rows per input -> (step, new_cache)

START_ID = 0  # T5 starts decoding with the pad id
EOS_ID = 1
FIRST_HISTORY = 32  # slots of the first segment; each next one doubles


# ----------------------------------------------------------------------------------------------------------
# Cache helpers


def history_lengths(max_decode_length: int) -> list[int]:
    """Cache lengths of the decode loop's segments: 32, 64, ... doubling, the last `max_decode_length`.

    Doubling bounds the loops (and compilations of the step) by log2(max_decode_length / 32) + 1 while
    attending, on average over 128 steps, to 88 slots instead of 128 (and to 32-64 for short outputs
    of a long maximum)."""
    lengths = [min(FIRST_HISTORY, max_decode_length)]
    while lengths[-1] < max_decode_length:
        lengths.append(min(2 * lengths[-1], max_decode_length))
    return lengths


def grow_cache(cache: Cache, larger: Cache) -> Cache:
    """`cache` zero-padded at the end of every axis to the shapes of `larger` (arrays or shape structs)."""

    def grow(old: Array, new: Any) -> Array:
        padding = [(0, size - old_size, 0) for old_size, size in zip(old.shape, new.shape)]
        return jax.lax.pad(old, jnp.zeros((), old.dtype), padding)

    return jax.tree_util.tree_map(grow, cache, larger)


def while_growing(not_done: Callable, advance: Callable, state: NamedTuple, new_cache: NewCache, max_decode_length: int):
    """`lax.while_loop(not_done, advance, state)` run in segments of `history_lengths`: the first starts
    from an empty cache (`state.cache` is None on entry), each stops when its cache is full, which then
    grows into the next. `state` has `position` and `cache` fields."""
    for length in history_lengths(max_decode_length):
        if state.cache is None:
            cache = new_cache(length)
        else:  # only the larger shapes are needed, not a zero-filled cache
            cache = grow_cache(state.cache, jax.eval_shape(functools.partial(new_cache, length)))
        state = jax.lax.while_loop(
            lambda s, length=length: not_done(s) & (s.position < length), advance, state._replace(cache=cache)
        )
    return state


def repeat_rows(tree: Any, n: int) -> Any:
    """Each row of every array repeated `n` times in place (example-major): for beams and samples."""
    return jax.tree_util.tree_map(lambda x: jnp.repeat(x, n, axis=0), tree)


def generated_lengths(sequences: Array, eos_id: int = EOS_ID) -> Array:
    """Tokens up to and including the first EOS (the full length when there is none), per sequence."""
    is_eos = sequences == eos_id
    first_eos = jnp.argmax(is_eos, axis=-1)
    return jnp.where(jnp.any(is_eos, axis=-1), first_eos + 1, sequences.shape[-1]).astype(jnp.int32)


def length_penalties(max_decode_length: int, length_penalty: float) -> Array:
    """(max_decode_length + 1,) float32 `generated_length ** length_penalty`, computed in float64 like
    HF's Python `length ** length_penalty` and then rounded, so normalized scores equal HF's bit for bit."""
    import numpy as np

    return np.asarray([float(n) ** length_penalty if n else 1.0 for n in range(max_decode_length + 1)], np.float32)


# ----------------------------------------------------------------------------------------------------------
# Sampling (greedy at temperature 0)


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


class SampleState(NamedTuple):
    """The sampling loop's carry: `rows` = batch * num_decodes."""

    position: Array  # () int32: tokens generated so far
    cache: Cache  # decoder cache
    tokens: Array  # (rows,) token each row feeds next
    sequences: Array  # (rows, length)
    log_prob: Array  # (rows,) summed model log-probs
    finished: Array  # (rows,) EOS generated


def temperature_sample(
    start: Start,
    *,
    batch_size: int,
    max_decode_length: int,
    rng: Array | None = None,
    num_decodes: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: int = EOS_ID,
    min_decode_length: int = 0,
) -> tuple[Array, Array]:
    """`num_decodes` samples per input, most likely first: sequences (batch, num_decodes, length), model log-probs
    (batch, num_decodes).

    `temperature == 0` picks the most likely kept token (greedy when top_k/top_p are off); `rng`
    defaults to key 0 (callers decoding many batches pass a fresh key for each: `evaluator.make_batch_decoder`).
    `min_decode_length` forbids EOS before that many tokens.
    """
    if temperature < 0:
        raise ValueError(f"temperature_sample.temperature={temperature!r}: give 0 (the most likely token) or more")
    if num_decodes < 1:
        raise ValueError(f"temperature_sample.num_decodes={num_decodes!r} is the number of samples per input: give a "
                         "whole number >= 1")  # fmt: skip
    if top_k < 0:  # it sampled unfiltered without a word
        raise ValueError(f"temperature_sample.top_k={top_k!r}: give 0 (off) or a whole number >= 1")
    if not 0 < top_p <= 1:
        raise ValueError(f"temperature_sample.top_p={top_p!r} is a share of the probability: give one in (0, 1]")
    rng = jax.random.key(0) if rng is None else rng
    step, new_cache = start(num_decodes)
    rows, length = batch_size * num_decodes, max_decode_length

    def not_done(state: SampleState) -> Array:
        return (state.position < length) & ~jnp.all(state.finished)

    def advance(state: SampleState) -> SampleState:
        position, finished = state.position, state.finished
        logits, cache = step(state.cache, state.tokens)
        logits = logits.astype(jnp.float32)
        model_log_probs = jax.nn.log_softmax(logits, axis=-1)
        if min_decode_length > 0:
            eos_logit = jnp.where(position >= min_decode_length, logits[:, eos_id], -jnp.inf)
            logits = logits.at[:, eos_id].set(eos_logit)
        if temperature == 0:
            chosen = jnp.argmax(filter_logits(logits, top_k=top_k, top_p=top_p), axis=-1).astype(jnp.int32)
        else:
            filtered = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
            chosen = jax.random.categorical(jax.random.fold_in(rng, position), filtered, axis=-1).astype(jnp.int32)
        chosen = jnp.where(finished, 0, chosen)
        token_log_prob = jnp.take_along_axis(model_log_probs, chosen[:, None], axis=-1)[:, 0]
        log_prob = state.log_prob + jnp.where(finished, 0.0, token_log_prob)
        sequences = jax.lax.dynamic_update_slice(state.sequences, chosen[:, None], (0, position))
        return SampleState(position + 1, cache, chosen, sequences, log_prob, finished | (chosen == eos_id))

    state = SampleState(
        position=jnp.int32(0),
        cache=None,
        tokens=jnp.full((rows,), START_ID, jnp.int32),
        sequences=jnp.zeros((rows, length), jnp.int32),
        log_prob=jnp.zeros((rows,), jnp.float32),
        finished=jnp.zeros((rows,), jnp.bool_),
    )
    state = while_growing(not_done, advance, state, new_cache, length)
    sequences, log_prob = state.sequences.reshape(batch_size, num_decodes, length), state.log_prob.reshape(batch_size, num_decodes)
    order = jnp.argsort(-log_prob, axis=-1)  # best first, as beams (T5X ranks its samples so): the prediction is the best
    return jnp.take_along_axis(sequences, order[..., None], axis=1), jnp.take_along_axis(log_prob, order, axis=1)


greedy = functools.partial(temperature_sample, temperature=0.0, num_decodes=1)
greedy.__doc__ = "Greedy decoding: `temperature_sample` at temperature 0 (one sequence per input)."
