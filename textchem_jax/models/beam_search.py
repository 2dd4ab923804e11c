"""Beam search over the decoder's key/value cache, with Hugging Face's semantics.

Why HF's semantics: published Text+Chem T5 numbers come from `generate(num_beams=k)`; with the same
weights this module returns the same hypotheses token for token (tests check it against transformers),
so our evaluations are comparable. Per step, for each example:

1. every running beam's next-token log-probs plus its running score; the best `2 * num_beams`
   (beam, token) candidates over all beams (twice as many, so enough non-EOS ones survive);
2. candidates that hit a stop (EOS, or the last position) become finished hypotheses only if they
   rank among the first `num_beams`; their score is `sum_logprobs / generated_length ** length_penalty`
   (generated length counts the EOS); the finished buffer keeps the best `num_beams` ever seen;
3. the best `num_beams` candidates that did not stop run on; the next step tells the model which beam
   each continues (`parents`), so the model's cache follows them without being gathered;
4. the example is done once the best running beam, length-normalized at its current length (HF's
   default `early_stopping=False` heuristic; `"never"` uses the maximum length when the penalty is
   positive, `True` stops as soon as `num_beams` hypotheses finished), cannot beat the worst of a full
   buffer. The search stops when every example is done or the last position is reached.

"Impossible" candidates get HF's -1e9 added rather than -inf, exactly as HF does, so ranks stay equal.
Everything has static shapes (a `lax.while_loop` over positions); after EOS a hypothesis holds pad (0).
The search knows no model: it sees `start(num_beams) -> (step, new_cache)` (see `decoding`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from textchem_jax.models.decoding import EOS_ID, START_ID, NewCache, Start, StepFn, length_penalties, while_growing

Array = jax.Array
Cache = Any

IMPOSSIBLE = -1.0e9  # HF's penalty for candidates that must not be chosen (exact in float32)
EARLY_STOPPING_MODES = (False, True, "never")


class BeamOptions(NamedTuple):
    """Search settings as arrays, so changing them does not recompile (build with `beam_options`)."""

    penalties: Array  # (length + 1,) float32: generated_length ** length_penalty
    min_decode_length: Array  # () int32: no EOS before this many tokens
    stop_when_full: Array  # () bool: early_stopping=True
    heuristic_at_max_length: Array  # () bool: early_stopping="never" with a positive length penalty


def beam_options(
    max_decode_length: int, length_penalty: float = 1.0, early_stopping: bool | str = False, min_decode_length: int = 0
) -> BeamOptions:
    """Host-side options (penalties as `decoding.length_penalties`: equal to HF's bit for bit)."""
    if early_stopping not in EARLY_STOPPING_MODES:
        raise ValueError(f"early_stopping must be one of {EARLY_STOPPING_MODES}, got {early_stopping!r}")
    return BeamOptions(
        penalties=length_penalties(max_decode_length, length_penalty),
        min_decode_length=np.int32(min_decode_length),
        stop_when_full=np.bool_(early_stopping is True),
        heuristic_at_max_length=np.bool_(early_stopping == "never" and length_penalty > 0.0),
    )


class BeamState(NamedTuple):
    """The while-loop carry; `batch` examples, `beams` per example, `length` decode positions."""

    position: Array  # () int32: tokens generated so far by the running beams
    cache: Cache  # decoder cache, batch * beams rows
    last_tokens: Array  # (batch, beams) token each running beam feeds next
    parents: Array  # (batch, beams) the beam of the last step each running beam continues
    running_tokens: Array  # (batch, beams, length), 0 after `position`
    running_scores: Array  # (batch, beams) summed log-probs (not length-penalized)
    finished_tokens: Array  # (batch, beams, length) best finished hypotheses, best first
    finished_scores: Array  # (batch, beams) length-penalized; IMPOSSIBLE-ish in empty slots
    finished_flags: Array  # (batch, beams) slot holds a real hypothesis
    improvable: Array  # (batch,) running beams may still beat the finished ones
    done: Array  # () bool: stop the loop


def top_k_by_blocks(x: Array, k: int, block: int = 8) -> tuple[Array, Array]:
    """`jax.lax.top_k(x, k)` over the last axis, same values, indices and tie order, in cheaper passes.

    The k blocks of `block` consecutive entries with the largest maxima (ties: lower block first) hold
    the k largest entries (ties: lower index first): every entry above the k-th block maximum lies in a
    block above it, and each chosen block tied at that maximum holds a tied entry that precedes those of
    unchosen blocks. XLA's CPU top-k of 20 over 80 x 32,128 takes 4.4 ms; block maxima, their top-k and
    the top-k of the chosen k * block entries take 1.9 ms.
    """
    size = x.shape[-1]
    num_blocks = -(-size // block)
    if num_blocks < 4 * k:  # too few blocks to save anything
        return jax.lax.top_k(x, k)
    if num_blocks * block != size:  # padding after the last entry, never ahead of a real entry
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, num_blocks * block - size)], constant_values=-jnp.inf)
    blocks = x.reshape(*x.shape[:-1], num_blocks, block)
    _, chosen = jax.lax.top_k(jnp.max(jnp.swapaxes(blocks, -1, -2), axis=-2), k)
    chosen = jnp.sort(chosen, axis=-1)  # candidates in index order, so ties keep it
    candidates = jnp.take_along_axis(blocks, chosen[..., None], axis=-2).reshape(*x.shape[:-1], k * block)
    values, position = jax.lax.top_k(candidates, k)
    return values, jnp.take_along_axis(chosen, position // block, axis=-1) * block + position % block


def top_candidates(accumulated: Array, count: int) -> tuple[Array, Array, Array]:
    """The `count` best (score, beam, token) of accumulated (batch, beams, vocab) scores, best first.

    Same result and tie order (lowest flat index first) as one top-k over `beams * vocab`, but in two
    stages (per beam, then over beams), which is cheaper on CPU for a large vocabulary.
    """
    batch, beams, vocab = accumulated.shape
    per_beam = min(count, vocab)
    beam_scores, beam_tokens = top_k_by_blocks(accumulated, per_beam)  # (batch, beams, per_beam)
    scores, flat = jax.lax.top_k(beam_scores.reshape(batch, beams * per_beam), count)
    beam = flat // per_beam
    tokens = jnp.take_along_axis(beam_tokens.reshape(batch, beams * per_beam), flat, axis=1)
    return scores, beam, tokens


def _gather_beams(x: Array, indices: Array) -> Array:
    """x (batch, beams, ...) -> (batch, k, ...) rows `indices` (batch, k) of each example."""
    expanded = indices.reshape(indices.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, expanded, axis=1)


def beam_search_with_step(
    step: StepFn,
    new_cache: NewCache,
    batch_size: int,
    options: BeamOptions,
    *,
    num_beams: int,
    eos_id: int = EOS_ID,
) -> tuple[Array, Array]:
    """All `num_beams` hypotheses (batch, beams, length) and scores (batch, beams), best first.

    `step` and `new_cache` work on `batch_size * num_beams` rows (example-major: row = example * beams + beam);
    the decode length is `len(options.penalties) - 1`.
    """
    beams = num_beams
    length = options.penalties.shape[0] - 1
    num_candidates = 2 * beams
    penalties = jnp.asarray(options.penalties, jnp.float32)
    among_first_beams = jnp.arange(num_candidates) < beams

    def penalty(flag: Array) -> Array:
        return jnp.where(flag, jnp.float32(IMPOSSIBLE), jnp.float32(0.0))

    def advance(state: BeamState) -> BeamState:
        position = state.position
        logits, cache = step(state.cache, state.last_tokens.reshape(-1), state.parents)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        log_probs = log_probs.reshape(batch_size, beams, -1)
        eos_allowed = position >= options.min_decode_length  # HF's min_new_tokens: EOS log-prob -inf
        log_probs = log_probs.at[..., eos_id].set(jnp.where(eos_allowed, log_probs[..., eos_id], -jnp.inf))
        accumulated = log_probs + state.running_scores[..., None]

        # 1. candidates: the best 2 * beams continuations over all beams of an example
        scores, source_beam, tokens = top_candidates(accumulated, num_candidates)
        candidates = _gather_beams(state.running_tokens, source_beam)
        candidates = jnp.where(jnp.arange(length) == position, tokens[..., None], candidates)
        stops = (tokens == eos_id) | (position + 1 >= length)

        # 2. running beams: the best candidates that did not stop
        running_scores, keep = jax.lax.top_k(scores + penalty(stops), beams)
        running_tokens = _gather_beams(candidates, keep)
        last_tokens = jnp.take_along_axis(tokens, keep, axis=1)
        origin = jnp.take_along_axis(source_beam, keep, axis=1)

        # 3. finished hypotheses: stopped candidates among the first `beams`, merged into the buffer
        #    (penalties added in HF's order, so even the ranks of impossible entries agree)
        just_finished = stops & among_first_beams
        finished_scores = scores / penalties[position + 1]
        full = jnp.all(state.finished_flags, axis=1, keepdims=True) & options.stop_when_full
        finished_scores = finished_scores + penalty(full)
        finished_scores = finished_scores + penalty(~state.improvable[:, None])
        finished_scores = finished_scores + penalty(~just_finished)
        merged_scores = jnp.concatenate([state.finished_scores, finished_scores], axis=1)
        finished_scores, best = jax.lax.top_k(merged_scores, beams)
        finished_tokens = _gather_beams(jnp.concatenate([state.finished_tokens, candidates], axis=1), best)
        finished_flags = jnp.take_along_axis(
            jnp.concatenate([state.finished_flags, just_finished], axis=1), best, axis=1
        )

        # 4. can any example still improve?
        hypothetical_length = jnp.where(options.heuristic_at_max_length, length, position + 1)
        best_possible = running_scores[:, :1] / penalties[hypothetical_length]
        worst_finished = jnp.where(
            finished_flags, jnp.min(finished_scores, axis=1, keepdims=True), jnp.float32(IMPOSSIBLE)
        )
        improvable = state.improvable & jnp.any(best_possible > worst_finished, axis=1)
        open_beams = ~(jnp.all(finished_flags) & options.stop_when_full)
        done = ~(jnp.any(improvable) & open_beams & ~jnp.all(stops))
        return BeamState(
            position + 1, cache, last_tokens, origin, running_tokens, running_scores, finished_tokens, finished_scores,
            finished_flags, improvable, done,
        )  # fmt: skip

    def not_done(state: BeamState) -> Array:
        return ~state.done & (state.position < length)  # (and the segment's cache not full: `while_growing`)

    # Only beam 0 starts alive (the others at -1e9), so the first step does not pick the same token n times.
    initial_running = jnp.where(jnp.arange(beams) == 0, 0.0, IMPOSSIBLE).astype(jnp.float32)
    state = BeamState(
        position=jnp.int32(0),
        cache=None,
        last_tokens=jnp.full((batch_size, beams), START_ID, jnp.int32),
        parents=jnp.broadcast_to(jnp.arange(beams, dtype=jnp.int32), (batch_size, beams)),
        running_tokens=jnp.zeros((batch_size, beams, length), jnp.int32),
        running_scores=jnp.broadcast_to(initial_running, (batch_size, beams)),
        finished_tokens=jnp.zeros((batch_size, beams, length), jnp.int32),
        finished_scores=jnp.full((batch_size, beams), IMPOSSIBLE, jnp.float32),
        finished_flags=jnp.zeros((batch_size, beams), jnp.bool_),
        improvable=jnp.ones((batch_size,), jnp.bool_),
        done=jnp.bool_(False),
    )
    state = while_growing(not_done, advance, state, new_cache, length)
    return state.finished_tokens, state.finished_scores


def beam_search(
    start: Start,
    *,
    batch_size: int,
    max_decode_length: int,
    rng: Array | None = None,
    num_decodes: int = 4,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    num_return_sequences: int | None = None,
    eos_id: int = EOS_ID,
    min_decode_length: int = 0,
    max_new_tokens: int | None = None,
) -> tuple[Array, Array]:
    """Beam search with `num_decodes` beams, as HF `generate(num_beams=...)`.

    Returns sequences (batch, k, max_decode_length) without the start token, 0 after EOS, and their
    scores (batch, k) = sum of log-probs / generated_length ** length_penalty, best first;
    k = num_return_sequences (default: all beams). `min_decode_length` is HF's `min_new_tokens`;
    `max_new_tokens` stops the search earlier than the targets' length (HF's `max_length=512`, which counts
    the start token, is 511 new tokens).
    `rng` is unused (the search is deterministic), accepted so every search has one signature.
    """
    del rng
    if num_decodes < 1:
        raise ValueError(f"beam_search.num_decodes={num_decodes!r} is the number of beams: give a whole number >= 1 "
                         "(1 is greedy)")  # fmt: skip
    k = num_decodes if num_return_sequences is None else num_return_sequences
    if not 1 <= k <= num_decodes:
        raise ValueError(f"beam_search.num_return_sequences={num_return_sequences!r} must be from 1 to "
                         f"beam_search.num_decodes={num_decodes} (the beams): return at most as many as are searched")  # fmt: skip
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ValueError(f"beam_search.max_new_tokens={max_new_tokens!r}: give a whole number >= 1, or None for the "
                         "targets' length")  # fmt: skip
    length = max_decode_length if max_new_tokens is None else min(max_new_tokens, max_decode_length)
    options = beam_options(length, length_penalty, early_stopping, min_decode_length)
    step, new_cache = start(num_decodes)
    sequences, scores = beam_search_with_step(step, new_cache, batch_size, options, num_beams=num_decodes, eos_id=eos_id)
    if length < max_decode_length:  # the shape every decoder returns
        sequences = jnp.pad(sequences, ((0, 0), (0, 0), (0, max_decode_length - length)))
    return sequences[:, :k], scores[:, :k]
