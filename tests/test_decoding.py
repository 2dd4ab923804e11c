"""Beam search and sampling (the one decoding core) on tiny T5s, and parity with Hugging Face generate."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import predict, score, search

from textchem_jax.models import decoding
from textchem_jax.models.adapters import EncoderDecoderModel
from textchem_jax.models.beam_search import beam_search as beam_search_fn
from textchem_jax.models.beam_search import top_candidates, top_k_by_blocks
from textchem_jax.models.config import t5_config
from textchem_jax.models.decoding import EOS_ID, filter_logits, generated_lengths, temperature_sample
from textchem_jax.models.t5 import init_params

MAX_LENGTH = 10


def beam_search(model, params, inputs, *, num_beams, max_decode_length, **options):
    """Beam search of `model` on encoder inputs: (sequences (batch, beams, length), scores)."""
    decode_fn = search("beam", num_decodes=num_beams, **options)
    return predict(model, params, {"encoder_input_tokens": inputs}, decode_fn=decode_fn, max_decode_length=max_decode_length)


def sample(model, params, inputs, rng, *, max_decode_length, num_samples=1, **options):
    decode_fn = search("sample", num_decodes=num_samples, **options)
    return predict(model, params, {"encoder_input_tokens": inputs}, decode_fn=decode_fn,
                   max_decode_length=max_decode_length, rng=rng)  # fmt: skip


def score_sequences(model, params, inputs, sequences, length_penalty=0.0):
    return score(model, params, {"encoder_input_tokens": inputs, "decoder_target_tokens": sequences},
                 length_penalty=length_penalty)  # fmt: skip


def _tiny(version: str, eos_boost: float, seed: int = 0):
    """A tiny random T5 whose EOS is likely enough that hypotheses end at varied lengths."""
    config = t5_config("tiny", version, vocab_size=128, dropout_rate=0.0)
    params = nn.meta.unbox(init_params(config, jax.random.key(seed)))
    params = jax.tree_util.tree_map(np.array, params)  # writable copies
    if version == "1.0":
        params["token_embedder"]["embedding"][EOS_ID] *= eos_boost
    else:
        params["decoder"]["logits_dense"]["kernel"][:, EOS_ID] *= eos_boost
    return EncoderDecoderModel(config), params


def _inputs(batch: int = 5, length: int = 9, seed: int = 0) -> np.ndarray:
    tokens = np.random.default_rng(seed).integers(2, 128, (batch, length)).astype(np.int32)
    tokens[1, 5:] = 0  # padded rows
    tokens[3, 2:] = 0
    return tokens


@pytest.fixture(scope="module")
def tiny():
    """v1.1 (the search logic does not depend on the version; HF parity below covers both)."""
    model, params = _tiny("1.1", eos_boost=6.0, seed=1)  # greedy and beam hypotheses end at varied lengths
    return model, params, _inputs()


def _beams(model, params, inputs, num_beams=4, length_penalty=1.0, num_return_sequences=None, min_decode_length=0):
    """beam_search with the test length and every option spelled out."""
    return beam_search(
        model, params, inputs, num_beams=num_beams, max_decode_length=MAX_LENGTH, length_penalty=length_penalty,
        eos_id=EOS_ID, early_stopping=False, num_return_sequences=num_return_sequences,
        min_decode_length=min_decode_length,
    )  # fmt: skip


def _greedy(model, params, inputs):
    sequences, log_probs = predict(model, params, {"encoder_input_tokens": inputs}, max_decode_length=MAX_LENGTH)
    return np.asarray(sequences)[:, 0], np.asarray(log_probs)[:, 0]


def _after_first_eos(sequences: np.ndarray) -> np.ndarray:
    """Mask of the positions after each sequence's first EOS."""
    seen = np.cumsum(sequences == EOS_ID, axis=-1)
    return (seen - (sequences == EOS_ID)) > 0


# ------------------------------------------------------------------------------------------------
# Beam search


def test_top_candidates_equal_one_flat_top_k():
    scores = jax.random.normal(jax.random.key(1), (3, 4, 50))
    scores = scores.at[:, :, 7].set(2.0)  # ties across beams: the lower flat index must come first
    values, beam, token = top_candidates(scores, 8)
    flat_values, flat_index = jax.lax.top_k(scores.reshape(3, -1), 8)
    np.testing.assert_array_equal(values, flat_values)
    np.testing.assert_array_equal(beam * 50 + token, flat_index)


@pytest.mark.parametrize("size", [32128, 1001])  # T5's vocabulary, and one that leaves a partial block
def test_top_k_by_blocks_equals_top_k_with_ties_and_infinities(size):
    rng = np.random.default_rng(3)
    continuous = rng.standard_normal((4, 3, size)).astype(np.float32)
    tied = rng.integers(0, 4, (4, 3, size)).astype(np.float32)  # thousands of ties at the k-th value
    tied[0, 0, :] = -np.inf  # a row of -inf only
    tied[1] = np.where(np.arange(size) % 7 == 0, np.inf, -np.inf)  # ties at +inf, many fewer than blocks
    tied[2, :, -60::7] = 9.0  # late blocks rank first, and their other entries tie with earlier ones
    spread = np.where(np.arange(size) % 97 == 0, 5.0, continuous).astype(np.float32)  # one tie in many blocks
    for x in (continuous, tied, spread):
        values, indices = jax.jit(lambda x: top_k_by_blocks(x, 20))(x)
        expected_values, expected_indices = jax.lax.top_k(x, 20)
        np.testing.assert_array_equal(values, expected_values)
        np.testing.assert_array_equal(indices, expected_indices)


def test_one_beam_equals_greedy(tiny):
    model, params, inputs = tiny
    greedy = _greedy(model, params, inputs)[0]
    sequences, _ = _beams(model, params, inputs, num_beams=1)
    np.testing.assert_array_equal(np.asarray(sequences)[:, 0], greedy)
    assert (greedy == EOS_ID).any(), "the fixture should produce some EOS"


@pytest.mark.parametrize("length_penalty", [0.6, 1.0, 2.0])
def test_beam_scores_sorted_and_equal_rescored_log_probs(tiny, length_penalty):
    model, params, inputs = tiny
    sequences, scores = _beams(model, params, inputs, length_penalty=length_penalty)
    sequences, scores = np.asarray(sequences), np.asarray(scores)
    assert sequences.shape == (5, 4, MAX_LENGTH) and scores.shape == (5, 4)
    assert np.all(np.diff(scores, axis=1) <= 0), "best first"
    rescored = score_sequences(model, params, inputs, sequences, length_penalty=length_penalty)
    np.testing.assert_allclose(rescored, scores, rtol=1e-4, atol=1e-5)
    for row in sequences:  # the beams of an example are distinct hypotheses
        assert len({tuple(beam) for beam in row}) == len(row)


def test_max_new_tokens_stops_the_search_where_a_shorter_target_length_would(tiny):
    """GT4SD decodes with HF's generate(max_length=512), which counts the start token: 511 new tokens, one fewer
    than a search to the targets' 512 (runs/eval_released.gin binds max_new_tokens = 511)."""
    model, params, inputs = tiny
    short, short_scores = beam_search(model, params, inputs, num_beams=4, max_decode_length=6)
    capped, capped_scores = beam_search(model, params, inputs, num_beams=4, max_decode_length=MAX_LENGTH, max_new_tokens=6)
    capped = np.asarray(capped)
    assert capped.shape == (5, 4, MAX_LENGTH) and not capped[..., 6:].any()  # the shape every decoder returns
    np.testing.assert_array_equal(capped[..., :6], short)
    np.testing.assert_array_equal(capped_scores, short_scores)
    with pytest.raises(ValueError, match=r"beam_search.max_new_tokens=0: give a whole number >= 1"):
        beam_search(model, params, inputs, num_beams=4, max_decode_length=MAX_LENGTH, max_new_tokens=0)


def test_everything_after_eos_is_pad(tiny):
    model, params, inputs = tiny
    sequences, _ = _beams(model, params, inputs)
    sequences = np.asarray(sequences)
    lengths = np.asarray(generated_lengths(sequences))
    assert (lengths < MAX_LENGTH).any(), "some hypotheses should end early"
    assert np.all(sequences[_after_first_eos(sequences)] == 0)
    ended = (sequences == EOS_ID).any(-1)
    assert np.all(lengths[~ended] == MAX_LENGTH)  # without EOS a hypothesis runs to the last position


def test_num_return_sequences_are_the_best_beams(tiny):
    model, params, inputs = tiny
    all_beams, all_scores = _beams(model, params, inputs)
    best, best_scores = _beams(model, params, inputs, num_return_sequences=2)
    np.testing.assert_array_equal(best, np.asarray(all_beams)[:, :2])
    np.testing.assert_array_equal(best_scores, np.asarray(all_scores)[:, :2])
    with pytest.raises(ValueError, match=r"num_return_sequences=5 must be from 1 to beam_search.num_decodes=4"):
        _beams(model, params, inputs, num_return_sequences=5)
    with pytest.raises(ValueError, match=r"beam_search.num_decodes=0 is the number of beams"):  # named num_beams
        _beams(model, params, inputs, num_beams=0)
    with pytest.raises(ValueError, match=r"temperature_sample.num_decodes=0 is the number of samples"):
        sample(model, params, inputs, jax.random.key(0), max_decode_length=MAX_LENGTH, num_samples=0)
    with pytest.raises(ValueError, match="early_stopping"):
        beam_search(model, params, inputs, num_beams=4, max_decode_length=MAX_LENGTH, early_stopping="sometimes")


def test_min_decode_length_forbids_early_eos(tiny):
    model, params, inputs = tiny
    sequences, _ = _beams(model, params, inputs, min_decode_length=6)
    lengths = np.asarray(generated_lengths(np.asarray(sequences)))
    assert lengths.min() >= 7


# ------------------------------------------------------------------------------------------------
# Sampling


def test_temperature_zero_and_top_k_one_equal_greedy(tiny):
    model, params, inputs = tiny
    greedy = _greedy(model, params, inputs)[0]
    cold, cold_log_probs = _greedy(model, params, inputs)  # sampling at temperature 0
    top1, _ = sample(model, params, inputs, jax.random.key(4), max_decode_length=MAX_LENGTH, top_k=1, num_samples=3)
    np.testing.assert_array_equal(cold, greedy)
    np.testing.assert_array_equal(np.asarray(top1), np.repeat(greedy[:, None], 3, axis=1))
    rescored = score_sequences(model, params, inputs, cold[:, None])
    np.testing.assert_allclose(cold_log_probs, rescored[:, 0], rtol=1e-4, atol=1e-5)


def test_sampling_is_deterministic_per_key_and_stops_at_eos(tiny):
    model, params, inputs = tiny
    options = dict(max_decode_length=MAX_LENGTH, num_samples=4, temperature=1.5, top_p=0.95)
    first, first_log_probs = sample(model, params, inputs, jax.random.key(7), **options)
    again, again_log_probs = sample(model, params, inputs, jax.random.key(7), **options)
    other, _ = sample(model, params, inputs, jax.random.key(8), **options)
    first, again, other = np.asarray(first), np.asarray(again), np.asarray(other)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first_log_probs, again_log_probs)
    assert not np.array_equal(first, other)
    assert (first == EOS_ID).any()
    assert np.all(first[_after_first_eos(first)] == 0)
    rescored = score_sequences(model, params, inputs, first)
    np.testing.assert_allclose(first_log_probs, rescored, rtol=1e-4, atol=1e-4)


def test_a_rows_samples_depend_on_its_key_and_row_not_on_the_rows_after_it(tiny):
    """Each row draws its own noise, numbered by its place in the batch: the rows a mesh pads a batch with change
    no real row's samples, so one device and a data-parallel mesh sample alike; rows of equal inputs differ."""
    model, params, inputs = tiny
    options = dict(max_decode_length=MAX_LENGTH, num_samples=2, temperature=1.5)
    padded = np.concatenate([inputs, np.zeros_like(inputs)])  # as `evaluator.on_mesh` pads for the data axis
    alone, alone_log_probs = sample(model, params, inputs, jax.random.key(5), **options)
    within, within_log_probs = sample(model, params, padded, jax.random.key(5), **options)
    np.testing.assert_array_equal(np.asarray(within)[: len(inputs)], alone)
    # a sum of at most MAX_LENGTH float32 log-probs, each computed for a batch of another size
    np.testing.assert_allclose(np.asarray(within_log_probs)[: len(inputs)], alone_log_probs,
                               rtol=MAX_LENGTH * np.finfo(np.float32).eps)  # fmt: skip
    same = np.repeat(inputs[:1], 4, axis=0)
    rows = np.asarray(sample(model, params, same, jax.random.key(5), **options)[0]).reshape(8, -1)
    assert len({row.tobytes() for row in rows}) == 8


def test_filter_logits_keeps_the_nucleus_and_top_k():
    probs = np.array([[0.1, 0.5, 0.05, 0.25, 0.1]], np.float32)  # sorted: 1 (.5), 3 (.25), 0/4 (.1), 2 (.05)
    logits = jnp.log(probs)
    kept = lambda **kw: np.isfinite(np.asarray(filter_logits(logits, **kw)))[0]  # noqa: E731
    np.testing.assert_array_equal(kept(top_p=0.4), [0, 1, 0, 0, 0])  # the top token is always kept
    np.testing.assert_array_equal(kept(top_p=0.7), [0, 1, 0, 1, 0])  # .5 < .7 <= .75
    np.testing.assert_array_equal(kept(top_p=0.8), [1, 1, 0, 1, 0])  # a tie is cut by rank
    np.testing.assert_array_equal(kept(top_k=2), [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(kept(top_k=3, top_p=0.6), [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(kept(), [1, 1, 1, 1, 1])


def test_sampled_frequencies_follow_the_renormalized_nucleus():
    probs = np.array([0.1, 0.5, 0.05, 0.25, 0.1], np.float32)
    rows = 20_000

    def step(cache, tokens):  # a "model" with a fixed next-token distribution
        return jnp.broadcast_to(jnp.log(probs), (tokens.shape[0], probs.size)), cache

    tokens, log_probs = jax.jit(
        lambda rng: temperature_sample(
            lambda n: (step, lambda length: ()), batch_size=rows, max_decode_length=1, rng=rng, top_p=0.7
        )
    )(jax.random.key(0))
    tokens, log_probs = np.asarray(tokens)[:, 0], np.asarray(log_probs)[:, 0]  # one sample per row
    counts = np.bincount(tokens[:, 0], minlength=probs.size) / rows
    np.testing.assert_allclose(counts, [0, 2 / 3, 0, 1 / 3, 0], atol=0.015)
    np.testing.assert_allclose(np.exp(log_probs[:3]), probs[tokens[:3, 0]], rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# One signature for every search


def test_every_search_returns_sequences_and_scores_of_one_shape(tiny):
    model, params, inputs = tiny
    sequences, scores = predict(model, params, {"encoder_input_tokens": inputs}, max_decode_length=MAX_LENGTH)
    assert sequences.shape == (5, 1, MAX_LENGTH) and scores.shape == (5, 1)
    sequences, scores = beam_search(model, params, inputs, num_beams=4, max_decode_length=MAX_LENGTH)
    assert sequences.shape == (5, 4, MAX_LENGTH) and scores.shape == (5, 4)
    np.testing.assert_array_equal(sequences, _beams(model, params, inputs)[0])
    sequences, scores = sample(
        model, params, inputs, jax.random.key(1), max_decode_length=MAX_LENGTH, num_samples=4, temperature=1.5,
        top_p=0.95,
    )  # fmt: skip
    assert sequences.shape == (5, 4, MAX_LENGTH) and scores.shape == (5, 4)
    with pytest.raises(ValueError, match="temperature"):
        sample(model, params, inputs, jax.random.key(1), max_decode_length=MAX_LENGTH, temperature=-1.0)
    with pytest.raises(ValueError, match=r"top_k=-3: give 0 \(off\) or a whole number >= 1"):  # sampled unfiltered
        sample(model, params, inputs, jax.random.key(1), max_decode_length=MAX_LENGTH, top_k=-3)
    with pytest.raises(ValueError, match=r"top_p=1.5 is a share of the probability"):
        sample(model, params, inputs, jax.random.key(1), max_decode_length=MAX_LENGTH, top_p=1.5)


# ------------------------------------------------------------------------------------------------
# Parity with Hugging Face transformers


def _hf_tiny(version: str, directory):
    """A random tiny HF T5 (EOS made likely, so beams end at varied lengths), saved to `directory`."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, dropout_rate=0.0,
        feed_forward_proj="relu" if version == "1.0" else "gated-gelu", tie_word_embeddings=version == "1.0",
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    config.scale_decoder_outputs = version == "1.0"  # transformers 5 reads the v1.0/v1.1 switch here
    hf_model = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for parameter in hf_model.parameters():
            parameter.mul_(2.0)  # peakier distributions than the default init
        head = hf_model.shared.weight if version == "1.0" else hf_model.lm_head.weight
        head[EOS_ID] *= 8.0 if version == "1.0" else 4.0
    hf_model.save_pretrained(directory)
    return hf_model


@pytest.fixture(scope="module", params=["1.0", "1.1"])
def hf_pair(request, tmp_path_factory):
    from textchem_jax.models.hf_convert import load_hf_directory

    directory = tmp_path_factory.mktemp(f"hf_t5_{request.param}")
    hf_model = _hf_tiny(request.param, directory)
    config, params = load_hf_directory(directory)
    assert config.tie_word_embeddings == (request.param == "1.0")
    inputs = np.random.default_rng(0).integers(2, 64, (6, 7)).astype(np.int32)
    inputs[1, 4:] = 0
    inputs[3, 2:] = 0
    return hf_model, EncoderDecoderModel(config), params, inputs


def _hf_beams(hf_model, inputs, num_beams, max_new_tokens, **options):
    import torch

    with torch.no_grad():
        out = hf_model.generate(
            input_ids=torch.tensor(inputs, dtype=torch.long), attention_mask=torch.tensor(inputs != 0),
            num_beams=num_beams, do_sample=False, max_new_tokens=max_new_tokens, num_return_sequences=num_beams,
            output_scores=True, return_dict_in_generate=True, **options,
        )  # fmt: skip
    sequences = out.sequences.numpy()[:, 1:]  # drop the start token
    # HF pads its cropped output (with EOS for T5: `pad_token_id or eos` with pad 0); ours is 0 after EOS.
    padded = np.zeros((sequences.shape[0], max_new_tokens), np.int64)
    padded[:, : sequences.shape[1]] = sequences
    padded[_after_first_eos(padded)] = 0
    batch = inputs.shape[0]
    return padded.reshape(batch, num_beams, -1), out.sequences_scores.numpy().reshape(batch, num_beams)


@pytest.mark.needs_hf
@pytest.mark.parametrize(
    "length_penalty, early_stopping", [(0.6, False), (1.0, False), (2.0, False), (1.0, True), (2.0, "never")]
)
def test_beam_search_matches_hugging_face(hf_pair, length_penalty, early_stopping):
    hf_model, model, params, inputs = hf_pair
    num_beams, max_new_tokens = 4, 12
    expected, expected_scores = _hf_beams(
        hf_model, inputs, num_beams, max_new_tokens, length_penalty=length_penalty, early_stopping=early_stopping
    )
    sequences, scores = beam_search(
        model, params, inputs, num_beams=num_beams, max_decode_length=max_new_tokens,
        length_penalty=length_penalty, early_stopping=early_stopping,
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(sequences), expected)  # every beam, token for token
    # Sums of up to 12 float32 log-softmaxes, summed in other orders by XLA's and PyTorch's kernels (1.2e-4
    # seen); a different token, or a wrong length penalty, moves a score by far more.
    np.testing.assert_allclose(np.asarray(scores), expected_scores, rtol=1e-4, atol=5e-4)
    lengths = np.asarray(generated_lengths(expected))
    assert (lengths < max_new_tokens).any() and (lengths == max_new_tokens).any(), "a mix of ended and cut beams"


@pytest.mark.parametrize(
    ("max_decode_length", "lengths"),
    [(6, [6]), (32, [32]), (33, [32, 33]), (128, [32, 64, 128]), (300, [32, 64, 128, 256, 300])],
)
def test_history_grows_in_doubling_segments(max_decode_length, lengths):
    assert decoding.history_lengths(max_decode_length) == lengths


@pytest.mark.needs_hf
def test_searches_with_a_growing_history_match_hugging_face_and_one_segment(hf_pair, monkeypatch):
    """Segments of 4, 8 and 12 slots (the cache grown twice while beams and samples run): beam search still
    equals HF token for token, and greedy equals our one-segment greedy."""
    hf_model, model, params, inputs = hf_pair
    expected, _ = _hf_beams(hf_model, inputs, 4, 12, length_penalty=1.0, early_stopping=False)
    one_segment, _ = predict(model, params, {"encoder_input_tokens": inputs}, max_decode_length=12)
    monkeypatch.setattr(decoding, "FIRST_HISTORY", 4)
    assert decoding.history_lengths(12) == [4, 8, 12]

    def run(decode_fn):  # a new function, so it is traced (and segmented) anew
        return jax.jit(lambda p: model.predict_batch(p, {"encoder_input_tokens": inputs}, decode_fn=decode_fn,
                                                     max_decode_length=12))(params)  # fmt: skip

    beams, _ = run(functools.partial(beam_search_fn, num_decodes=4, length_penalty=1.0))
    np.testing.assert_array_equal(np.asarray(beams), expected)
    greedy, _ = run(decoding.greedy)
    np.testing.assert_array_equal(np.asarray(greedy), np.asarray(one_segment))
    lengths = np.asarray(generated_lengths(np.asarray(greedy)[:, 0]))
    assert (lengths <= 4).any() and (lengths == 12).any(), "rows end in the first segment and run through all"


@pytest.mark.needs_hf
def test_top_sequence_matches_hugging_face_with_fewer_returned(hf_pair):
    hf_model, model, params, inputs = hf_pair
    expected, _ = _hf_beams(hf_model, inputs, 5, 9, length_penalty=0.6)
    sequences, _ = beam_search(
        model, params, inputs, num_beams=5, max_decode_length=9, length_penalty=0.6, num_return_sequences=1
    )
    np.testing.assert_array_equal(np.asarray(sequences)[:, 0], expected[:, 0])
