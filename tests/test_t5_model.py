"""The Flax T5: published parameter counts, masks, packing, dtypes, scan/remat, losses, cached decoding."""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import predict
from textchem_jax.models import decoding, layers, losses, t5
from textchem_jax.models.adapters import EncoderDecoderModel
from textchem_jax.models.config import T5Config, preset_name, t5_config

VOCAB = 128


def tiny(version: str = "1.0", **overrides) -> T5Config:
    return t5_config("tiny", version, vocab_size=VOCAB, **overrides)


def plain_params(config: T5Config, seed: int = 0) -> dict:
    """Fresh parameters as NumPy arrays (jit-compiled init: faster than op-by-op on CPU)."""
    params = jax.jit(lambda rng: nn.meta.unbox(t5.init_params(config, rng)))(jax.random.key(seed))
    return jax.tree_util.tree_map(np.asarray, params)


@functools.lru_cache(maxsize=None)
def jitted(model: t5.T5):
    """model.apply compiled once per model (op-by-op Flax on CPU is far slower than compiling)."""
    return jax.jit(model.apply, static_argnames=("method", "deterministic", "mutable", "decode"))


def shift_right(targets: np.ndarray) -> np.ndarray:
    """Decoder inputs: targets shifted right, start id 0 (T5 / HF decoder_start_token_id=0)."""
    return np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)


def random_tokens(rng: np.random.Generator, shape: tuple[int, int], lengths: list[int]) -> np.ndarray:
    tokens = rng.integers(2, VOCAB, size=shape).astype(np.int32)
    for row, length in enumerate(lengths):
        tokens[row, length:] = 0
    return tokens


@pytest.fixture(scope="module", params=["1.0", "1.1"])
def model_and_params(request):
    config = tiny(request.param)
    return t5.T5(config), plain_params(config)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    encoder = random_tokens(rng, (3, 9), [9, 5, 2])
    targets = random_tokens(rng, (3, 7), [7, 4, 1])
    return encoder, targets


# ----------------------------------------------------------------------------------------------------------
# Sizes


@pytest.mark.parametrize(
    ("size", "version", "expected"),
    [("small", "1.0", 60_506_624), ("base", "1.0", 222_903_552), ("small", "1.1", 76_961_152),
     ("base", "1.1", 247_577_856)],
)  # fmt: skip
def test_published_parameter_counts_without_allocating(size, version, expected):
    for scan_layers in (False, True):
        config = t5_config(size, version, vocab_size=32128, scan_layers=scan_layers)
        shapes = jax.eval_shape(lambda config=config: t5.init_params(config, jax.random.key(0)))
        assert t5.count_params(shapes) == expected
    assert preset_name(config) == (size, version)


def test_parameter_tree_names_and_logical_axes():
    shapes = jax.eval_shape(lambda: t5.init_params(tiny("1.1"), jax.random.key(0)))
    assert shapes["token_embedder"]["embedding"].names == ("vocab", "embed")
    layer = shapes["decoder"]["layers_1"]
    assert layer["self_attention"]["query"]["kernel"].names == ("embed", "joined_kv")
    assert layer["encoder_decoder_attention"]["out"]["kernel"].names == ("joined_kv", "embed")
    assert layer["mlp"]["wi_0"]["kernel"].names == ("embed", "mlp")
    assert layer["mlp"]["wo"]["kernel"].names == ("mlp", "embed")
    assert layer["pre_cross_attention_layer_norm"]["scale"].names == ("embed",)
    assert shapes["decoder"]["relpos_bias"]["rel_embedding"].names == ("relpos_buckets", "heads")
    assert shapes["decoder"]["logits_dense"]["kernel"].names == ("embed", "vocab")
    assert "relpos_bias" not in layer  # one table per stack, not per layer

    scanned = jax.eval_shape(lambda: t5.init_params(tiny("1.0", scan_layers=True), jax.random.key(0)))
    query = scanned["encoder"]["layers"]["attention"]["query"]["kernel"]
    assert query.names == ("layers", "embed", "joined_kv") and query.value.shape == (2, 64, 64)
    assert "logits_dense" not in scanned["decoder"]  # v1.0 ties the logits to the embedding


def test_config_validation_and_dtype_names():
    assert tiny(dtype=jnp.bfloat16, param_dtype=np.float32).dtype == "bfloat16"
    assert tiny(param_dtype=np.dtype("float32")).param_dtype == "float32"
    with pytest.raises(ValueError, match="feed_forward"):
        tiny(feed_forward="swish")
    with pytest.raises(ValueError, match="remat_policy"):
        tiny(remat_policy="sometimes")
    with pytest.raises(ValueError, match=r"dropout_rate \(gin DROPOUT_RATE\) must be in \[0, 1\), got 1.5"):
        tiny(dropout_rate=1.5)  # trained with a frozen loss to the end, and ended 0
    with pytest.raises(ValueError, match="sizes must be positive whole numbers"):
        tiny(d_model=0)
    assert T5Config.from_dict(tiny().to_dict()) == tiny()


# ----------------------------------------------------------------------------------------------------------
# Forward pass


def test_forward_shapes_and_dtypes(model_and_params, batch):
    model, params = model_and_params
    encoder, targets = batch
    logits = jitted(model)({"params": params}, encoder, shift_right(targets), targets)
    assert logits.shape == (3, 7, VOCAB) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()
    encoded = jitted(model)({"params": params}, encoder, method=t5.T5.encode)
    assert encoded.shape == (3, 9, 64)


def test_bfloat16_activations_with_float32_params(batch):
    encoder, targets = batch
    config = tiny("1.1", dtype="bfloat16")
    boxed = t5.init_params(config, jax.random.key(0))
    params = nn.meta.unbox(boxed)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float32)}
    logits = jitted(t5.T5(config))({"params": params}, encoder, shift_right(targets), targets)
    assert logits.dtype == jnp.bfloat16
    reference = jitted(t5.T5(dataclasses.replace(config, dtype="float32")))(
        {"params": params}, encoder, shift_right(targets), targets
    )
    real = targets > 0
    error = np.abs(np.asarray(logits, np.float32) - np.asarray(reference))[real]
    assert error.max() < 0.1 * np.abs(np.asarray(reference))[real].max()


def test_padding_does_not_change_real_positions(model_and_params, batch):
    model, params = model_and_params
    encoder, targets = batch
    logits = jitted(model)({"params": params}, encoder, shift_right(targets), targets)
    padded_encoder = np.pad(encoder, ((0, 0), (0, 6)))
    padded_targets = np.pad(targets, ((0, 0), (0, 5)))
    padded_logits = jitted(model)({"params": params}, padded_encoder, shift_right(padded_targets), padded_targets)
    real = targets > 0
    np.testing.assert_allclose(np.asarray(padded_logits)[:, :7][real], np.asarray(logits)[real], rtol=1e-5, atol=1e-5)
    # Without the targets the decoder only applies the causal mask: real positions are unchanged too.
    unmasked = jitted(model)({"params": params}, padded_encoder, shift_right(padded_targets))
    np.testing.assert_allclose(np.asarray(unmasked)[:, :7][real], np.asarray(logits)[real], rtol=1e-5, atol=1e-5)


def test_encoder_padding_is_masked():
    """Changing what sits under encoder padding must not change anything (the mask, not the zeros, decides)."""
    config = tiny()
    model, params = t5.T5(config), plain_params(config)
    encoder = np.array([[5, 6, 7, 0, 0]], np.int32)
    mask = encoder > 0
    noisy = np.array([[5, 6, 7, 9, 11]], np.int32)
    decoder = np.array([[0, 3, 4]], np.int32)
    a = jitted(model)({"params": params}, jitted(model)({"params": params}, encoder, mask, method=t5.T5.encode),
                    encoder_mask=mask, decoder_input_tokens=decoder, method=t5.T5.decode)  # fmt: skip
    b = jitted(model)({"params": params}, jitted(model)({"params": params}, noisy, mask, method=t5.T5.encode),
                    encoder_mask=mask, decoder_input_tokens=decoder, method=t5.T5.decode)  # fmt: skip
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_packed_examples_match_separate_examples(model_and_params):
    model, params = model_and_params
    rng = np.random.default_rng(1)
    enc_a, enc_b = rng.integers(2, VOCAB, 5), rng.integers(2, VOCAB, 6)
    tgt_a, tgt_b = rng.integers(2, VOCAB, 4), rng.integers(2, VOCAB, 3)

    def alone(enc, tgt):
        return np.asarray(jitted(model)({"params": params}, enc[None], shift_right(tgt[None]), tgt[None]))[0]

    pad_enc, pad_dec = 3, 2
    encoder = np.concatenate([enc_a, enc_b, np.zeros(pad_enc, int)])[None]
    encoder_segments = np.array([[1] * 5 + [2] * 6 + [0] * pad_enc])
    targets = np.concatenate([tgt_a, tgt_b, np.zeros(pad_dec, int)])[None]
    decoder_inputs = np.concatenate([shift_right(tgt_a[None])[0], shift_right(tgt_b[None])[0], np.zeros(pad_dec, int)])
    decoder_segments = np.array([[1] * 4 + [2] * 3 + [0] * pad_dec])
    packed = jitted(model)(
        {"params": params}, encoder, decoder_inputs[None], targets,
        encoder_segment_ids=encoder_segments, decoder_segment_ids=decoder_segments,
        encoder_positions=np.array([list(range(5)) + list(range(6)) + [0] * pad_enc]),
        decoder_positions=np.array([list(range(4)) + list(range(3)) + [0] * pad_dec]),
    )  # fmt: skip
    packed = np.asarray(packed)[0]
    np.testing.assert_allclose(packed[:4], alone(enc_a, tgt_a), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(packed[4:7], alone(enc_b, tgt_b), rtol=1e-5, atol=1e-5)


def test_dropout_only_when_not_deterministic(batch):
    encoder, targets = batch
    config = tiny(dropout_rate=0.3)
    model, params = t5.T5(config), plain_params(config)

    def run(seed=None):
        # rbg keys: the same dropout semantics as threefry, a fraction of its CPU compile time.
        key = None if seed is None else jax.random.key(seed, impl="rbg")
        kwargs = {} if seed is None else {"deterministic": False, "rngs": {"dropout": key}}
        return np.asarray(jitted(model)({"params": params}, encoder, shift_right(targets), targets, **kwargs))

    base, first = run(), run(1)
    np.testing.assert_array_equal(run(1), first)
    assert not np.allclose(first, base) and not np.allclose(first, run(2))


# ----------------------------------------------------------------------------------------------------------
# Scan and remat


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_scanned_layers_give_the_same_logits(version, batch):
    encoder, targets = batch
    config = tiny(version)
    params = plain_params(config)
    stacked = t5.stack_layer_params(params)
    expected = jitted(t5.T5(config))({"params": params}, encoder, shift_right(targets), targets)
    scanned = jitted(t5.T5(dataclasses.replace(config, scan_layers=True)))(
        {"params": stacked}, encoder, shift_right(targets), targets
    )
    np.testing.assert_allclose(np.asarray(scanned), np.asarray(expected), rtol=1e-5, atol=1e-5)
    restored = t5.unstack_layer_params(stacked)
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, restored, params)
    # The scanned init has exactly the stacked shapes of the unscanned one.
    scanned_config = dataclasses.replace(config, scan_layers=True)
    scanned_shapes = jax.eval_shape(lambda: t5.init_params(scanned_config, jax.random.key(0)))
    assert jax.tree_util.tree_map(np.shape, nn.meta.unbox(scanned_shapes)) == jax.tree_util.tree_map(np.shape, stacked)


@pytest.mark.parametrize(("policy", "scan_layers"), [("full", False), ("dots", True)])
def test_remat_gives_the_same_logits_and_gradients(policy, scan_layers, batch):
    encoder, targets = batch
    config = tiny("1.1", scan_layers=scan_layers)
    params = plain_params(config)

    def loss_fn(cfg):
        def loss(p):
            logits = jitted(t5.T5(cfg))({"params": p}, encoder, shift_right(targets), targets)
            return losses.cross_entropy_loss(logits, targets)[0], logits

        return jax.jit(jax.value_and_grad(loss, has_aux=True))

    (loss_a, logits_a), grads_a = loss_fn(config)(params)
    (loss_b, logits_b), grads_b = loss_fn(dataclasses.replace(config, remat_policy=policy))(params)
    np.testing.assert_allclose(np.asarray(logits_b), np.asarray(logits_a), rtol=1e-5, atol=1e-5)
    # float32 sums over the batch's tokens may be reordered by another fusion: n * eps of the sum
    np.testing.assert_allclose(float(loss_b), float(loss_a), rtol=targets.size * np.finfo(np.float32).eps)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5), grads_a, grads_b)


# ----------------------------------------------------------------------------------------------------------
# Losses


def test_loss_ignores_padding():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 11)).astype(np.float32)
    targets = np.array([[3, 4, 1, 0, 0], [5, 1, 0, 0, 0]], np.int32)
    padded_logits = np.concatenate([logits, rng.normal(size=(2, 20, 11)).astype(np.float32) * 50], axis=1)
    padded_targets = np.pad(targets, ((0, 0), (0, 20)))
    for kwargs in ({}, {"z_loss": 1e-2, "label_smoothing": 0.1}, {"loss_normalization": "sequences"}):
        loss, metrics = losses.cross_entropy_loss(logits, targets, **kwargs)
        padded_loss, padded_metrics = losses.cross_entropy_loss(padded_logits, padded_targets, **kwargs)
        np.testing.assert_allclose(float(padded_loss), float(loss), rtol=1e-6)
        for name in metrics:
            np.testing.assert_allclose(float(padded_metrics[name]), float(metrics[name]), rtol=1e-6)
    assert float(metrics["num_tokens"]) == 5 and float(metrics["num_sequences"]) == 2

    real = targets > 0
    log_p = jax.nn.log_softmax(logits)
    nll = -np.take_along_axis(np.asarray(log_p), targets[..., None], -1)[..., 0]
    loss, metrics = losses.cross_entropy_loss(logits, targets)
    np.testing.assert_allclose(float(loss), nll[real].mean(), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["accuracy"]), (logits.argmax(-1) == targets)[real].mean())
    sums = losses.cross_entropy_loss(logits, targets, loss_normalization="none")[0]
    np.testing.assert_allclose(float(sums), nll[real].sum(), rtol=1e-6)
    np.testing.assert_allclose(float(losses.cross_entropy_loss(logits, targets, loss_normalization="sequences")[0]),
                               nll[real].sum() / 2, rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(float(losses.cross_entropy_loss(logits, targets, loss_normalization=10.0)[0]),
                               nll[real].sum() / 10, rtol=1e-6)  # fmt: skip
    weights = real * np.array([[1.0, 0.0, 1.0, 0, 0], [1.0, 1.0, 0, 0, 0]])
    np.testing.assert_allclose(float(losses.cross_entropy_loss(logits, targets, weights)[0]),
                               (nll * weights).sum() / weights.sum(), rtol=1e-6)  # fmt: skip


def test_z_loss_and_label_smoothing():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 4, 7)).astype(np.float32) * 3
    targets = np.array([[3, 4, 1, 0], [5, 6, 2, 1]], np.int32)
    real = targets > 0
    base = float(losses.cross_entropy_loss(logits, targets)[0])
    log_z = np.log(np.exp(logits.astype(np.float64)).sum(-1))
    with_z, metrics = losses.cross_entropy_loss(logits, targets, z_loss=1e-3)
    np.testing.assert_allclose(float(with_z) - base, 1e-3 * (log_z**2)[real].mean(), rtol=1e-4)
    np.testing.assert_allclose(float(metrics["z_loss"]), 1e-3 * (log_z**2)[real].mean(), rtol=1e-4)
    np.testing.assert_allclose(float(metrics["cross_entropy"]), base, rtol=1e-6)

    smoothing, vocab = 0.1, logits.shape[-1]
    soft = np.full(logits.shape, smoothing / (vocab - 1))
    np.put_along_axis(soft, targets[..., None], 1 - smoothing, -1)
    log_p = logits - log_z[..., None]
    entropy = -(soft * np.log(soft)).sum(-1)
    expected = (-(soft * log_p).sum(-1) - entropy)[real].mean()
    smoothed = float(losses.cross_entropy_loss(logits, targets, label_smoothing=smoothing)[0])
    np.testing.assert_allclose(smoothed, expected, rtol=1e-5)
    # Predicting exactly the smoothed distribution is the optimum: loss 0.
    optimum = float(losses.cross_entropy_loss(np.log(soft).astype(np.float32), targets, label_smoothing=smoothing)[0])
    assert abs(optimum) < 1e-5 and smoothed > 0


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_unfused_changes_no_bit_of_any_value(dtype):
    """Decoding's residual adds go through `layers.unfused`, a reduce-precision to the value's own format:
    it must keep every bit, extremes included, or decoding would drift from teacher forcing."""
    finfo = jnp.finfo(dtype)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, float(finfo.max), -float(finfo.max), float(finfo.tiny),
               float(finfo.smallest_subnormal), -float(finfo.smallest_subnormal), 1 + float(finfo.eps)]  # fmt: skip
    values = jnp.concatenate([jnp.asarray(special, dtype), jax.random.normal(jax.random.key(0), (4096,), dtype) * 1e3])
    bits = jnp.dtype(dtype).itemsize * 8
    as_bits = functools.partial(jax.lax.bitcast_convert_type, new_dtype=jnp.dtype(f"uint{bits}"))
    kept = jax.jit(layers.unfused)(values)  # compiled, as decoding runs it
    np.testing.assert_array_equal(np.asarray(as_bits(kept)), np.asarray(as_bits(values)))


# ----------------------------------------------------------------------------------------------------------
# Cached decoding


@pytest.mark.parametrize(("version", "scan_layers"), [("1.0", False), ("1.1", True)])
def test_cached_decoding_matches_teacher_forcing(version, scan_layers, batch):
    encoder, _ = batch
    config = tiny(version, scan_layers=scan_layers)
    params = plain_params(config)
    model = t5.T5(config)
    rng = np.random.default_rng(2)
    decoder_inputs = shift_right(rng.integers(2, VOCAB, size=(3, 6)).astype(np.int32))
    full = np.asarray(jitted(model)({"params": params}, encoder, decoder_inputs))

    start = EncoderDecoderModel(config).decoding_start(params, {"encoder_input_tokens": encoder})
    step, new_cache = start(1)
    cache = new_cache(4)  # grown to 6 slots after 4 steps, as searches do
    step = jax.jit(step)
    for position in range(6):
        if position == 4:
            cache = decoding.grow_cache(cache, new_cache(6))
        logits, cache = step(cache, jnp.asarray(decoder_inputs[:, position]))
        np.testing.assert_allclose(np.asarray(logits), full[:, position], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_cached_decoding_follows_parents_like_teacher_forcing_on_each_rows_history(scan_layers, batch):
    """Beam search's reordering: at every step each row continues a random row of its input (`parents`); its
    logits equal teacher forcing on the history it inherited, though the cache itself never moved."""
    encoder, _ = batch
    config = tiny("1.0", scan_layers=scan_layers)
    params = plain_params(config)
    inputs, n, length = encoder.shape[0], 3, 6
    start = EncoderDecoderModel(config).decoding_start(params, {"encoder_input_tokens": encoder})
    step, new_cache = start(n)
    cache = new_cache(length)
    step = jax.jit(step)
    rng = np.random.default_rng(5)
    histories = np.zeros((inputs, n, 0), np.int32)
    for position in range(length):
        parents = rng.integers(0, n, (inputs, n)).astype(np.int32)
        tokens = rng.integers(2, VOCAB, (inputs, n)).astype(np.int32) if position else np.zeros((inputs, n), np.int32)
        histories = np.concatenate([np.take_along_axis(histories, parents[..., None], axis=1), tokens[..., None]], axis=2)
        logits, cache = step(cache, jnp.asarray(tokens.reshape(-1)), jnp.asarray(parents))
        padded = np.pad(histories, ((0, 0), (0, 0), (0, length - position - 1)))  # causal: one shape, one compile
        forced = jitted(t5.T5(config))({"params": params}, np.repeat(encoder, n, axis=0), padded.reshape(inputs * n, -1))
        np.testing.assert_allclose(np.asarray(logits), np.asarray(forced)[:, position], rtol=1e-5, atol=1e-5)


def test_greedy_decode_is_consistent_with_teacher_forcing(batch):
    encoder, _ = batch
    config = tiny("1.1")
    model, params = t5.T5(config), plain_params(config)
    # Make EOS likely: its output column gets twice the norm (then rows stop at 0, at 1 and never).
    kernel = params["decoder"]["logits_dense"]["kernel"].copy()
    kernel[:, decoding.EOS_ID] *= 2.0
    params = {**params, "decoder": {**params["decoder"], "logits_dense": {"kernel": kernel}}}
    tokens = np.asarray(predict(EncoderDecoderModel(config), params, {"encoder_input_tokens": encoder}, max_decode_length=8)[0][:, 0])
    assert tokens.shape == (3, 8)
    ends = [int(np.argmax(row == decoding.EOS_ID)) if (row == decoding.EOS_ID).any() else None for row in tokens]
    assert None in ends and any(end for end in ends), f"EOS positions {ends}: the test must cover stops and non-stops"
    logits = np.asarray(jitted(model)({"params": params}, encoder, shift_right(tokens)))
    for row, sequence in enumerate(tokens):
        end = int(np.argmax(sequence == decoding.EOS_ID)) + 1 if (sequence == decoding.EOS_ID).any() else 8
        np.testing.assert_array_equal(logits[row, :end].argmax(-1), sequence[:end])
        assert (sequence[end:] == 0).all()
