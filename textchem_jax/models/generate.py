"""One decoding entry point, `decode`, that a gin config switches between greedy, beam and sampling.

Why: the evaluator and `infer` call one function and get one shape back whatever the strategy, so a
run config changes decoding with bindings only, e.g. `decode.method = "beam"`, `decode.num_beams = 10`.
Every method returns (sequences (batch, k, max_decode_length) without the start token and 0 after
EOS, scores (batch, k) best first for beams): greedy k=1, beam k=num_return_sequences or num_beams,
sample k=num_samples. `score_sequences` re-scores given sequences by teacher forcing (e.g. to rank
sampled candidates, or to check a search's scores).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from textchem_jax.models.beam_search import beam_options, beam_search
from textchem_jax.models.decoding import EOS_ID
from textchem_jax.models.sampling import sample
from textchem_jax.models.t5 import T5

Array = jax.Array

DECODE_METHODS = ("greedy", "beam", "sample")


def decode(
    model: T5,
    params: Any,
    encoder_input_tokens: Array,
    *,
    method: str = "greedy",
    max_decode_length: int = 128,
    eos_id: int = EOS_ID,
    min_decode_length: int = 0,
    num_beams: int = 4,
    num_return_sequences: int | None = None,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    rng: Array | None = None,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    input_domain: Array | None = None,
) -> tuple[Array, Array]:
    """(sequences (batch, k, max_decode_length), scores (batch, k)) for encoder inputs padded with 0.

    `input_domain` (per example or per token) routes e2-CLM models; T5 ignores it.

    - "greedy": the most likely token each step; score = summed log-probs.
    - "beam": `beam_search` (Hugging Face `generate(num_beams=...)` semantics); score = summed
      log-probs / generated_length ** length_penalty.
    - "sample": `sample` with `rng` (default key 0), temperature, top_k, top_p; score = the model's
      summed log-probs.
    Options of the other methods are ignored, so one gin file can hold them all.
    """
    if method == "greedy":
        return sample(
            model, params, encoder_input_tokens, jax.random.key(0), max_decode_length=max_decode_length,
            temperature=0.0, eos_id=eos_id, min_decode_length=min_decode_length, input_domain=input_domain,
        )  # fmt: skip
    if method == "beam":
        return beam_search(
            model, params, encoder_input_tokens, num_beams=num_beams, max_decode_length=max_decode_length,
            length_penalty=length_penalty, eos_id=eos_id, early_stopping=early_stopping,
            num_return_sequences=num_return_sequences, min_decode_length=min_decode_length, input_domain=input_domain,
        )  # fmt: skip
    if method == "sample":
        return sample(
            model, params, encoder_input_tokens, jax.random.key(0) if rng is None else rng,
            max_decode_length=max_decode_length, num_samples=num_samples, temperature=temperature, top_k=top_k,
            top_p=top_p, eos_id=eos_id, min_decode_length=min_decode_length, input_domain=input_domain,
        )  # fmt: skip
    raise ValueError(f"method must be one of {DECODE_METHODS}, got {method!r}")


def generated_lengths(sequences: Array, eos_id: int = EOS_ID) -> Array:
    """Tokens up to and including the first EOS (the full length when there is none), per sequence."""
    is_eos = sequences == eos_id
    first_eos = jnp.argmax(is_eos, axis=-1)
    return jnp.where(jnp.any(is_eos, axis=-1), first_eos + 1, sequences.shape[-1]).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "length_penalty", "eos_id"))
def score_sequences(
    model: T5,
    params: Any,
    encoder_input_tokens: Array,
    sequences: Array,
    *,
    length_penalty: float = 0.0,
    eos_id: int = EOS_ID,
) -> Array:
    """Teacher-forced scores (batch, k) of sequences (batch, k, length) given their encoder inputs (batch, ...).

    Score = sum of log p(token) up to and including the first EOS, / generated_length ** length_penalty
    (0: the plain sum; the length counts the EOS, as in beam search). A 0 token before EOS counts as a
    token: the decoder attends causally to every earlier position, as during incremental decoding.
    """
    encoder_input_tokens = jnp.asarray(encoder_input_tokens, jnp.int32)
    sequences = jnp.asarray(sequences, jnp.int32)
    batch, k, length = sequences.shape
    flat = sequences.reshape(batch * k, length)
    inputs = jnp.repeat(encoder_input_tokens, k, axis=0)
    decoder_inputs = jnp.pad(flat[:, :-1], ((0, 0), (1, 0)))  # start token 0, shifted right
    encoded = model.apply({"params": params}, inputs, method=T5.encode)
    # No decoder_target_tokens: every position is a valid key; causality hides positions after EOS.
    logits = model.apply({"params": params}, encoded, inputs, decoder_inputs, method=T5.decode)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    token_log_probs = jnp.take_along_axis(log_probs, flat[..., None], axis=-1)[..., 0]
    lengths = generated_lengths(flat, eos_id)
    counted = jnp.arange(length)[None, :] < lengths[:, None]
    totals = jnp.sum(jnp.where(counted, token_log_probs, 0.0), axis=-1)
    penalties = jnp.asarray(beam_options(length, length_penalty).penalties)
    return (totals / penalties[lengths]).reshape(batch, k)
