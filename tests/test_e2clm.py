"""e2-CLM: reduction to T5, domain routing, aggregation, frozen encoders without optimizer state, decoding."""

from __future__ import annotations

import dataclasses
import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import predict
from textchem_jax import catalogue, partitioning
from textchem_jax.models import e2clm, losses, t5
from textchem_jax.models.adapters import E2ClmModel, EncoderDecoderModel
from textchem_jax.models.config import T5Config, t5_config
from textchem_jax.models.e2clm import E2Clm, E2ClmConfig

VOCAB = 64


def tiny(version: str = "1.0", **overrides) -> T5Config:
    values = dict(vocab_size=VOCAB, num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0)
    return t5_config("tiny", version, **{**values, **overrides})


# Everything runs op by op, not jitted: each variant is a new program, and compiling one (seconds on CPU)
# costs far more than dispatching the ops of a tiny model, whose per-op kernels are compiled once and shared.


@functools.lru_cache(maxsize=None)
def boxed_params(config: E2ClmConfig, seed: int = 0):
    return e2clm.init_params(config, jax.random.key(seed))


def plain_params(config: E2ClmConfig, seed: int = 0) -> dict:
    return jax.tree_util.tree_map(np.asarray, nn.meta.unbox(boxed_params(config, seed)))


@functools.lru_cache(maxsize=None)
def t5_plain_params(config: T5Config, seed: int = 0) -> dict:
    params = nn.meta.unbox(t5.init_params(config, jax.random.key(seed)))
    return jax.tree_util.tree_map(np.asarray, params)


def shift_right(targets: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)


def make_batch() -> dict[str, np.ndarray]:
    """Four examples, two per input domain (text, chemistry, text, chemistry), padded."""
    rng = np.random.default_rng(0)
    encoder = rng.integers(2, VOCAB, size=(4, 9)).astype(np.int32)
    targets = rng.integers(2, VOCAB, size=(4, 6)).astype(np.int32)
    for row, (source_length, target_length) in enumerate([(9, 6), (5, 4), (3, 2), (7, 5)]):
        encoder[row, source_length:] = 0
        targets[row, target_length:] = 0
    return {
        "encoder_input_tokens": encoder,
        "decoder_input_tokens": shift_right(targets),
        "decoder_target_tokens": targets,
        "input_domain": np.array([catalogue.TEXT, catalogue.CHEMISTRY, catalogue.TEXT, catalogue.CHEMISTRY], np.int32),
    }


BATCH = make_batch()
TEXT_ROWS = BATCH["input_domain"] == catalogue.TEXT
CHEMISTRY_ROWS = ~TEXT_ROWS


def logits(config: E2ClmConfig, params, batch=BATCH) -> np.ndarray:
    return np.asarray(E2Clm(config).apply({"params": params}, **batch))


def perturbed(params: dict, scope: str, seed: int = 1) -> dict:
    """`params` with every array under the top-level `scope` shifted by noise."""
    rng = np.random.default_rng(seed)
    noisy = jax.tree_util.tree_map(lambda x: x + rng.normal(0, 0.5, x.shape).astype(x.dtype), params[scope])
    return {**params, scope: noisy}


def variant(shared=False, aggregation="mean", freeze_text=False, freeze_chemistry=False, own_embeddings=False, **t5):
    return E2ClmConfig(tiny(**t5), shared, freeze_text, freeze_chemistry, aggregation, own_embeddings)


# Every combination the brief asks for, plus own embeddings; shared encoders freeze for both domains or neither.
VARIANTS = [
    *(variant(True, aggregation, frozen, frozen) for aggregation in ("mean", "select") for frozen in (False, True)),
    *(
        variant(False, aggregation, freeze_text, freeze_chemistry)
        for aggregation in ("mean", "cross_attention", "select")
        for freeze_text, freeze_chemistry in itertools.product((False, True), repeat=2)
    ),
    variant(True, "select", True, True, own_embeddings=True),
    variant(False, "cross_attention", True, False, own_embeddings=True),
    variant(False, "select", False, True, own_embeddings=True, version="1.1"),
]


def variant_id(config: E2ClmConfig) -> str:
    frozen = "".join(name for name, flag in (("T", config.freeze_text), ("C", config.freeze_chemistry)) if flag)
    parts = ["shared" if config.shared else "separate", config.aggregation, f"frozen={frozen or '-'}"]
    if config.own_embeddings:
        parts.append("own-emb")
    if config.t5.feed_forward != "relu":
        parts.append("v1.1")
    return "/".join(parts)


# ----------------------------------------------------------------------------------------------------------
# Reduction to T5


@pytest.mark.parametrize(
    "aggregation, t5_overrides",
    [("mean", {}), ("select", {"version": "1.1"}), ("mean", {"scan_layers": True})],
    ids=["v1.0-mean", "v1.1-select", "scanned-mean"],
)
def test_shared_variant_is_t5(aggregation, t5_overrides):
    config = variant(True, aggregation, **t5_overrides)
    # Same parameter tree: names, shapes, dtypes and logical axes (abstract: nothing to compute).
    e2_boxed = jax.eval_shape(lambda: e2clm.init_params(config, jax.random.key(0)))
    t5_boxed = jax.eval_shape(lambda: t5.init_params(config.t5, jax.random.key(0)))
    assert jax.tree_util.tree_structure(e2_boxed) == jax.tree_util.tree_structure(t5_boxed)
    assert jax.tree_util.tree_leaves(e2_boxed) == jax.tree_util.tree_leaves(t5_boxed)
    assert partitioning.logical_partition_specs(e2_boxed) == partitioning.logical_partition_specs(t5_boxed)
    if config.t5.scan_layers:
        return  # the same modules as unscanned: T5's own tests cover scanned numerics (eager scans are slow)
    # Same weights, same logits (input_domain is ignored by the one encoder).
    t5_params = t5_plain_params(config.t5)
    features = {k: v for k, v in BATCH.items() if k != "input_domain"}
    expected = np.asarray(t5.T5(config.t5).apply({"params": t5_params}, **features))
    np.testing.assert_array_equal(logits(config, t5_params), expected)


@pytest.mark.parametrize("aggregation", ["mean", "select"])
def test_separate_encoders_with_t5_weights_give_t5_logits(aggregation):
    """The documented mapping: T5 `encoder` into both domain encoders, decoder side by name."""
    config = variant(False, aggregation)
    t5_params = t5_plain_params(config.t5)
    params = e2clm.with_t5_weights(plain_params(config), t5_params, config)
    features = {k: v for k, v in BATCH.items() if k != "input_domain"}
    expected = np.asarray(t5.T5(config.t5).apply({"params": t5_params}, **features))
    np.testing.assert_array_equal(logits(config, params), expected)
    assert e2clm.with_t5_weights(plain_params(variant(True)), t5_params, variant(True)).keys() == t5_params.keys()


# ----------------------------------------------------------------------------------------------------------
# Every variant: init, forward on a mixed-domain batch, one AdamW step through make_optimizer


def _adam_states(opt_state) -> list[optax.ScaleByAdamState]:
    is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)  # noqa: E731
    return [leaf for leaf in jax.tree_util.tree_leaves(opt_state, is_leaf=is_adam) if is_adam(leaf)]


@pytest.mark.parametrize("config", VARIANTS, ids=variant_id)
def test_variant_trains_one_step_leaving_frozen_encoders_alone(config):
    model = E2Clm(config)
    params = jax.tree_util.tree_map(jnp.asarray, plain_params(config))
    out = logits(config, params)
    assert out.shape == (4, 6, VOCAB) and np.all(np.isfinite(out))

    optimizer = e2clm.make_optimizer(optax.adamw(1e-2, weight_decay=0.1), params, config)
    opt_state = optimizer.init(params)

    def train_step(params, opt_state, rng):
        def loss_fn(params):
            output = model.apply({"params": params}, **BATCH, deterministic=False, rngs={"dropout": rng})
            return losses.cross_entropy_loss(output, BATCH["decoder_target_tokens"])[0]

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, grads

    new_params, new_opt_state, grads = train_step(params, opt_state, jax.random.key(1))

    frozen = e2clm.frozen_scopes(config)
    mask = e2clm.trainable_mask(params, config)
    for scope in params:
        assert all(not m for m in jax.tree_util.tree_leaves(mask[scope])) == (scope in frozen)
    for (path, before), after, grad, trained in zip(
        jax.tree_util.tree_flatten_with_path(params)[0],
        jax.tree_util.tree_leaves(new_params),
        jax.tree_util.tree_leaves(grads),
        jax.tree_util.tree_leaves(mask),
    ):
        name = jax.tree_util.keystr(path)
        if trained:  # the loss reaches it (not just weight decay), and the optimizer moved it
            assert np.any(grad), f"trained parameter {name} gets no gradient"
            assert not np.array_equal(before, after), f"trained parameter {name} did not change"
        else:
            np.testing.assert_array_equal(after, before, err_msg=f"frozen parameter {name} changed")

    # Frozen parameters have no Adam moments: their subtrees of mu and nu hold no arrays.
    for state in (opt_state, new_opt_state):
        (adam,) = _adam_states(state)
        for moments in (adam.mu, adam.nu):
            for scope in params:
                leaves = jax.tree_util.tree_leaves(moments[scope])
                if scope in frozen:
                    assert leaves == [], f"frozen {scope} has optimizer state"
                else:
                    assert [x.shape for x in leaves] == [x.shape for x in jax.tree_util.tree_leaves(params[scope])]
        assert jax.tree_util.tree_leaves(state.inner_states[e2clm.FROZEN]) == []
        trained_size = sum(
            x.size for x, m in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(mask)) if m
        )
        state_size = sum(x.size for x in jax.tree_util.tree_leaves(state) if jnp.issubdtype(x.dtype, jnp.floating))
        assert state_size == 2 * trained_size


def test_trainable_mask_on_boxed_and_plain_parameters_agree():
    config = variant(False, "cross_attention", freeze_text=True, own_embeddings=True)
    boxed = e2clm.trainable_mask(boxed_params(config), config)
    plain = e2clm.trainable_mask(plain_params(config), config)
    assert jax.tree_util.tree_leaves(nn.meta.unbox(boxed)) == jax.tree_util.tree_leaves(plain)
    assert e2clm.frozen_scopes(config) == {"text_encoder", "text_embedder"}
    assert not any(jax.tree_util.tree_leaves(plain["text_embedder"]))
    assert all(jax.tree_util.tree_leaves(plain["token_embedder"]))


def test_make_optimizer_rejects_parameters_of_another_variant():
    separate = variant(False, "select", freeze_text=True)
    with pytest.raises(ValueError, match="do not match"):
        e2clm.make_optimizer(optax.adamw(1e-3), plain_params(variant(True)), separate)


def test_frozen_encoder_with_own_embedding_gets_no_gradient():
    config = variant(False, "mean", freeze_text=True, own_embeddings=True)
    model = E2Clm(config)

    def loss_fn(params):
        return losses.cross_entropy_loss(model.apply({"params": params}, **BATCH), BATCH["decoder_target_tokens"])[0]

    grads = jax.grad(loss_fn)(plain_params(config))
    for scope in ("text_encoder", "text_embedder"):
        assert all(not np.any(g) for g in jax.tree_util.tree_leaves(grads[scope]))
    assert any(np.any(g) for g in jax.tree_util.tree_leaves(grads["chemistry_encoder"]))


# ----------------------------------------------------------------------------------------------------------
# Routing and aggregation


def test_select_routes_each_example_to_its_domain_encoder():
    config = variant(False, "select")
    params = plain_params(config)
    base = logits(config, params)
    text_changed = logits(config, perturbed(params, "text_encoder"))
    np.testing.assert_array_equal(text_changed[CHEMISTRY_ROWS], base[CHEMISTRY_ROWS])
    assert not np.allclose(text_changed[TEXT_ROWS], base[TEXT_ROWS])
    chemistry_changed = logits(config, perturbed(params, "chemistry_encoder"))
    np.testing.assert_array_equal(chemistry_changed[TEXT_ROWS], base[TEXT_ROWS])
    assert not np.allclose(chemistry_changed[CHEMISTRY_ROWS], base[CHEMISTRY_ROWS])


@pytest.mark.parametrize("aggregation", ["mean", "cross_attention"])
def test_aggregating_variants_read_both_encoders_for_every_example(aggregation):
    config = variant(False, aggregation)
    params = plain_params(config)
    base = logits(config, params)
    for scope in ("text_encoder", "chemistry_encoder"):
        changed = logits(config, perturbed(params, scope))
        for row in range(len(base)):
            assert not np.allclose(changed[row], base[row]), f"{scope} does not reach example {row}"


def test_mean_ignores_the_domain_and_cross_attention_is_led_by_it():
    mean = variant(False, "mean")
    flipped = {**BATCH, "input_domain": 1 - BATCH["input_domain"]}
    no_domain = {k: v for k, v in BATCH.items() if k != "input_domain"}
    np.testing.assert_array_equal(logits(mean, plain_params(mean), no_domain), logits(mean, plain_params(mean)))
    cross = variant(False, "cross_attention")
    assert not np.allclose(logits(cross, plain_params(cross), flipped), logits(cross, plain_params(cross)))


@pytest.mark.parametrize("aggregation", ["select", "cross_attention"])
def test_routing_variants_require_the_domain(aggregation):
    config = variant(False, aggregation)
    no_domain = {k: v for k, v in BATCH.items() if k != "input_domain"}
    with pytest.raises(ValueError, match="input_domain"):
        E2Clm(config).apply({"params": plain_params(config)}, **no_domain)
    with pytest.raises(ValueError, match="input_domain must be"):
        E2Clm(config).apply({"params": plain_params(config)}, **no_domain, input_domain=np.zeros((4, 2), np.int32))


@pytest.mark.parametrize("aggregation", ["mean", "select", "cross_attention"])
def test_packed_rows_route_per_token(aggregation):
    """Two examples of different domains packed in one row encode as they do apart (per-token input_domain)."""
    config = variant(False, aggregation)
    params = plain_params(config)
    encode = functools.partial(E2Clm(config).apply, {"params": params}, method="encode")
    text_example = np.array([[5, 9, 13, 1]], np.int32)
    chemistry_example = np.array([[7, 3, 22, 40, 11, 1]], np.int32)
    apart_text = encode(text_example, input_domain=np.array([catalogue.TEXT]))
    apart_chemistry = encode(chemistry_example, input_domain=np.array([catalogue.CHEMISTRY]))

    packed = np.concatenate([text_example, chemistry_example, np.zeros((1, 2), np.int32)], axis=1)
    segments = np.array([[1] * 4 + [2] * 6 + [0] * 2], np.int32)
    domains = np.array([[catalogue.TEXT] * 4 + [catalogue.CHEMISTRY] * 8], np.int32)
    together = encode(packed, encoder_segment_ids=segments, input_domain=domains)
    np.testing.assert_allclose(together[:, :4], apart_text, atol=1e-5)
    np.testing.assert_allclose(together[:, 4:10], apart_chemistry, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Sizes and partitioning


def test_separate_encoders_add_exactly_one_encoder():
    shared = plain_params(variant(True))
    encoder_size = t5.count_params(shared["encoder"])
    for aggregation in ("mean", "select"):
        assert t5.count_params(plain_params(variant(False, aggregation))) - t5.count_params(shared) == encoder_size
    cross = plain_params(variant(False, "cross_attention"))
    assert t5.count_params(cross) - t5.count_params(shared) == encoder_size + t5.count_params(cross["aggregator"])
    # Own embeddings: one (vocab, d_model) table per encoder on top.
    table = VOCAB * tiny().d_model
    assert t5.count_params(plain_params(variant(False, own_embeddings=True))) - t5.count_params(shared) == (
        encoder_size + 2 * table
    )


@pytest.mark.parametrize("config", VARIANTS, ids=variant_id)
def test_every_parameter_has_logical_axis_names(config):
    known = {name for name, _ in partitioning.standard_logical_axis_rules()}
    leaves = jax.tree_util.tree_leaves(boxed_params(config), is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    for leaf in leaves:
        assert isinstance(leaf, nn.LogicallyPartitioned), f"unboxed parameter of shape {np.shape(leaf)}"
        assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= known, leaf.names


# ----------------------------------------------------------------------------------------------------------
# Decoding


@pytest.mark.parametrize("aggregation", ["cross_attention", "select"])
def test_cached_decoding_matches_teacher_forcing(aggregation):
    config = variant(False, aggregation, version="1.1")
    params = plain_params(config)
    model = E2Clm(config)
    encoder_tokens, domains = BATCH["encoder_input_tokens"], BATCH["input_domain"]
    targets = np.where(BATCH["decoder_target_tokens"] > 0, BATCH["decoder_target_tokens"], 1)  # no pads
    full_targets = {**BATCH, "decoder_target_tokens": targets, "decoder_input_tokens": shift_right(targets)}
    forced = logits(config, params, full_targets)

    encoded = model.apply({"params": params}, encoder_tokens, input_domain=domains, method="encode")
    start = E2ClmModel(config).decoding_start(params, BATCH)
    step, new_cache = start(1)
    cache = new_cache(targets.shape[1])
    inputs = shift_right(targets)
    for position in range(targets.shape[1]):
        step_logits, cache = step(cache, jnp.asarray(inputs[:, position]))
        np.testing.assert_allclose(step_logits, forced[:, position], atol=1e-4, rtol=1e-4)

    # The E2Clm.decode method itself keeps the same cache as T5's decoder.
    _, variables = model.apply(
        {"params": params}, encoded, encoder_tokens, jnp.zeros_like(targets),
        decode=True, method="decode", mutable=["cache"],
    )  # fmt: skip
    assert jax.tree_util.tree_structure(variables["cache"]) == jax.tree_util.tree_structure(cache)


def test_greedy_decode_of_shared_variant_is_t5_greedy_decode():
    config = variant(True)
    params = t5_plain_params(config.t5)
    tokens = BATCH["encoder_input_tokens"]
    ours, _ = predict(E2ClmModel(config), params, {"encoder_input_tokens": tokens, "input_domain": BATCH["input_domain"]},
                      max_decode_length=7)  # fmt: skip
    reference, _ = predict(EncoderDecoderModel(config.t5), params, {"encoder_input_tokens": tokens}, max_decode_length=7)
    np.testing.assert_array_equal(ours, reference)


# ----------------------------------------------------------------------------------------------------------
# Configuration


def test_config_rejects_meaningless_variants():
    with pytest.raises(ValueError, match="aggregation"):
        variant(False, "sum")
    with pytest.raises(ValueError, match="cross-attention"):
        variant(True, "cross_attention")
    with pytest.raises(ValueError, match="freeze_text == freeze_chemistry"):
        variant(True, "mean", freeze_text=True)
    assert [variant(False, a).needs_domain for a in ("mean", "select", "cross_attention")] == [False, True, True]
    assert not variant(True, "select").needs_domain


def test_config_round_trips_and_flat_constructor():
    config = e2clm.e2clm_config("tiny", "1.1", aggregation="select", freeze_chemistry=True, vocab_size=VOCAB)
    assert config == E2ClmConfig(t5_config("tiny", "1.1", VOCAB), False, False, True, "select", False)
    assert E2ClmConfig.from_dict(config.to_dict()) == config
    assert dataclasses.is_dataclass(config) and hash(config) == hash(E2ClmConfig.from_dict(config.to_dict()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.shared = True  # type: ignore[misc]


def test_task_input_domains_follow_the_data_table():
    assert {task: catalogue.task_input_domain(f"textchem_{task}") for task in catalogue.DOMAINS} == {
        "forward": catalogue.CHEMISTRY,
        "retro": catalogue.CHEMISTRY,
        "mol2text": catalogue.CHEMISTRY,
        "paragraph2actions": catalogue.TEXT,
        "text2mol": catalogue.TEXT,
    }
    with pytest.raises(ValueError, match="unknown task"):
        catalogue.task_input_domain("translation")


# ----------------------------------------------------------------------------------------------------------
# Through the runtime: a routed variant trains, checkpoints, loads for inference and decodes


def _train_one_step(model, model_dir) -> None:
    from helpers import LENGTHS
    from textchem_jax import train as train_lib
    from textchem_jax.run_config import CheckpointConfig, DatasetConfig

    train_lib.train(
        model=model, model_dir=str(model_dir), optimizer=optax.adamw(1e-3), total_steps=1,
        train_dataset_cfg=DatasetConfig("textchem_demo", LENGTHS, "train", batch_size=4), checkpoint_cfg=CheckpointConfig(period=1),
    )  # fmt: skip


@pytest.fixture(scope="module")
def routed_run(tmp_path_factory):
    """The routed (`select`) variant, which reads `input_domain`, trained one step: loaded, evaluated and
    decoded in-process and by the commands below (one training for all; `xdist_group` keeps them on one worker)."""
    from helpers import tiny_e2clm

    model, directory = tiny_e2clm(aggregation="select"), tmp_path_factory.mktemp("routed") / "run"
    _train_one_step(model, directory)
    return model, directory


@pytest.mark.slow
@pytest.mark.xdist_group("e2clm_routed")
def test_routed_variant_checkpoint_loads_for_inference_and_decodes(routed_run):
    from textchem_jax.model_loading import load_for_inference

    model, directory = routed_run
    params = load_for_inference(model, str(directory), partitioning.make_mesh())
    assert set(params) == {"token_embedder", "decoder", "text_encoder", "chemistry_encoder"}
    tokens = BATCH["encoder_input_tokens"] % model.config.t5.vocab_size
    sequences, scores = predict(model, params, {"encoder_input_tokens": tokens, "input_domain": BATCH["input_domain"]},
                                max_decode_length=5)  # fmt: skip
    assert sequences.shape == (4, 1, 5) and np.all(np.isfinite(np.asarray(scores)))
    with pytest.raises(ValueError, match="input_domain"):  # a routed model refuses to guess the domain
        predict(model, params, {"encoder_input_tokens": tokens}, max_decode_length=5)


@pytest.mark.slow
def test_frozen_encoders_started_from_t5_checkpoints_stay_bit_equal_to_them(tmp_path):
    """The paper's frozen-encoder variants freeze real T5 encoders: one checkpoint for all parts, or one per part
    (a T5 training run and a converted T5 directory, as `textchem-convert` writes)."""
    import flax.linen as nn
    import optax as optax_lib

    from helpers import LENGTHS, tiny_e2clm, tiny_t5
    from textchem_jax import train as train_lib
    from textchem_jax.model_loading import load_for_inference, write_params
    from textchem_jax.run_config import CheckpointConfig, DatasetConfig

    def run(model, directory, initial=None):
        train_lib.train(
            model=model, model_dir=str(directory), optimizer=optax_lib.adamw(1e-2), total_steps=2,
            train_dataset_cfg=DatasetConfig("textchem_demo", LENGTHS, "train", batch_size=4),
            checkpoint_cfg=CheckpointConfig(period=2, initial_checkpoint_path=initial), log_period=1,
        )  # fmt: skip
        return loaded(model, directory)

    def loaded(model, directory):
        return jax.tree_util.tree_map(np.asarray, load_for_inference(model, str(directory), partitioning.make_mesh()))

    t5 = tiny_t5("1.0")
    t5_a = run(t5, tmp_path / "t5_a")
    (tmp_path / "t5_b").mkdir()
    write_params(tmp_path / "t5_b", nn.meta.unbox(t5.init(jax.random.key(1))))
    t5_b = loaded(t5, tmp_path / "t5_b")
    frozen = tiny_e2clm(aggregation="mean", freeze_text=True, freeze_chemistry=True, own_embeddings=True)

    def equal(a, b) -> bool:
        return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))

    one = run(frozen, tmp_path / "from_one", initial=str(tmp_path / "t5_a"))
    assert equal(one["text_encoder"], t5_a["encoder"]) and equal(one["chemistry_encoder"], t5_a["encoder"])
    assert equal(one["text_embedder"], t5_a["token_embedder"])
    assert not equal(one["decoder"], t5_a["decoder"])  # the decoder trained on from T5's

    parts = {"text": str(tmp_path / "t5_a"), "chemistry": str(tmp_path / "t5_b"), "decoder": str(tmp_path / "t5_a")}
    two = run(frozen, tmp_path / "from_two", initial=parts)
    assert equal(two["text_encoder"], t5_a["encoder"]) and equal(two["chemistry_encoder"], t5_b["encoder"])
    assert not equal(t5_a["encoder"], t5_b["encoder"])
    with pytest.raises(ValueError, match="T5 checkpoint of its own shape"):
        run(t5, tmp_path / "t5_parts", initial=parts)

    # A part trained with another vocabulary of the same size (two ids swapped) started the run, and froze it.
    import dataclasses
    import shutil

    from sentencepiece import sentencepiece_model_pb2

    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.model_loading import initial_params

    default = vocabularies.default_vocabulary()
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(open(vocabularies.vocabulary_file(default), "rb").read())
    proto.pieces[10].piece, proto.pieces[11].piece = proto.pieces[11].piece, proto.pieces[10].piece
    shutil.copytree(tmp_path / "t5_b", tmp_path / "t5_c")
    (tmp_path / "t5_c" / "spiece.model").write_bytes(proto.SerializeToString())
    bound = dataclasses.replace(frozen, vocabulary=default)
    swapped = tmp_path / "t5_c"
    with pytest.raises(ValueError, match=rf"the chemistry part \({swapped}\) brings {swapped}/spiece\.model"):
        initial_params(bound, {**parts, "chemistry": str(tmp_path / "t5_c")}, partitioning.make_mesh(),
                       like=nn.meta.unbox(frozen.init(jax.random.key(0))))  # fmt: skip


def _evaluate_and_infer(model, run, tmp_path) -> None:
    """In-process evaluation (RDKit metrics, predictions named by step) and beam inference of a trained run."""
    import json

    from helpers import LENGTHS
    from textchem_jax import evaluate as evaluate_lib
    from textchem_jax import infer as infer_lib
    from textchem_jax.models.beam_search import beam_search
    from textchem_jax.run_config import DatasetConfig

    results = evaluate_lib.evaluate(
        model=model, checkpoint_path=str(run), output_dir=str(tmp_path / "eval"),
        dataset_cfg=DatasetConfig("textchem_demo_text2mol", LENGTHS, "validation", 4, pack=False, num_examples=4),
    )  # fmt: skip
    assert set(results["textchem_demo_text2mol"]) >= {"validity", "morgan_fts"}
    assert (tmp_path / "eval" / "inference_eval" / "textchem_demo_text2mol-000001.jsonl").exists()
    (path,) = infer_lib.infer(
        model=model, checkpoint_path=str(run), output_dir=str(tmp_path / "preds"),
        dataset_cfg=DatasetConfig("textchem_demo_forward", LENGTHS, "test", 8, pack=False),
        decode_fn=functools.partial(beam_search, num_decodes=2), row_format="textchem",
    )  # fmt: skip
    rows = [json.loads(line) for line in open(path)]
    assert rows and all(len(row["beams"]) == 2 for row in rows)


@pytest.mark.slow
@pytest.mark.parametrize("variant", [dict(shared=True), dict(aggregation="mean"), dict(aggregation="cross_attention", freeze_text=True)],
                         ids=str)  # fmt: skip
def test_every_variant_through_evaluation_and_inference(tmp_path, variant):
    from helpers import tiny_e2clm

    model = tiny_e2clm(**variant)
    _train_one_step(model, tmp_path / "run")
    _evaluate_and_infer(model, tmp_path / "run", tmp_path)


@pytest.mark.slow
@pytest.mark.xdist_group("e2clm_routed")
def test_routed_variant_through_evaluation_and_inference(routed_run, tmp_path):
    _evaluate_and_infer(*routed_run, tmp_path)


@pytest.mark.slow
@pytest.mark.xdist_group("e2clm_routed")
def test_routed_variant_through_the_eval_and_infer_commands(routed_run, tmp_path):
    """The routed run, evaluated and decoded by the real `textchem-eval` and `textchem-infer` commands from
    gin files alone."""
    import json
    import os
    import subprocess
    import sys

    from helpers import LENGTHS, ROOT

    model = ["--gin_file=models/e2clm_small.gin", "--gin.e2clm.e2clm_config.size='tiny'",
             "--gin.e2clm.e2clm_config.aggregation='select'", "--gin.DROPOUT_RATE=0.0",
             f"--gin.CHECKPOINT_PATH='{routed_run[1]}'", f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}"]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    def run(module: str, *flags: str) -> str:
        result = subprocess.run([sys.executable, "-m", module, *model, *flags], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=600)  # fmt: skip
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        return result.stdout

    printed = run("textchem_jax.evaluate", "--gin_file=runs/eval.gin", f"--gin.EVAL_OUTPUT_DIR='{tmp_path / 'eval'}'",
                  "--gin.MIXTURE_OR_TASK_NAME='textchem_demo'", "--gin.run_config.DatasetConfig.num_examples=2")  # fmt: skip
    assert all(f"textchem_demo_{task}" in printed for task in catalogue.TASKS)
    run("textchem_jax.infer", "--gin_file=runs/infer.gin", f"--gin.INFER_OUTPUT_DIR='{tmp_path / 'preds'}'",
        "--gin.MIXTURE_OR_TASK_NAME='textchem_demo_mol2text'", "--gin.BATCH_SIZE=4")  # fmt: skip
    path = tmp_path / "preds" / "textchem_demo_mol2text-predict.jsonl-00000-of-00001"  # T5X's infer rows
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows and all(isinstance(row["prediction"], str) and "targets_pretokenized" in row["inputs"] for row in rows)


def test_a_checkpoint_holding_parameters_the_model_lacks_is_another_model():
    """A variant A checkpoint (each encoder its own embedding) loaded into the same variant without them read the
    shared parts only and decoded as another model, with no error."""
    from helpers import tiny_e2clm

    from textchem_jax.checkpoints import check_shapes
    from textchem_jax.model_loading import abstract_params

    own = abstract_params(tiny_e2clm(aggregation="select", own_embeddings=True), partitioning.make_mesh())[0]
    plain = abstract_params(tiny_e2clm(aggregation="select"), partitioning.make_mesh())[0]
    assert set(own) - set(plain) == {"text_embedder", "chemistry_embedder"}
    check_shapes(own, plain, "run", fix=lambda: "fix")  # what loading for training's parts allows
    with pytest.raises(ValueError, match=r"the checkpoint run holds 2 parameter\(s\) this model lacks, first "
                                         r"\['chemistry_embedder'\]\['embedding'\]: fix"):  # fmt: skip
        check_shapes(own, plain, "run", fix=lambda: "fix", exact=True)


# ----------------------------------------------------------------------------------------------------------
# A run held against the variant its config.gin records; the parts a variant starts from


def _recorded_run(directory, *bindings: str):
    """A MODEL_DIR with a checkpoints/ folder and the config.gin textchem-train writes for models/e2clm_small.gin
    at size tiny with `bindings` (gin's own record of the configuration, defaults included)."""
    import gin

    from textchem_jax import launch

    launch.parse_gin(["models/e2clm_small.gin"], ["e2clm.e2clm_config.size = 'tiny'", *bindings])
    try:
        launch.write_config(str(directory))
    finally:
        gin.clear_config()
    (directory / "checkpoints").mkdir()
    return directory


def test_a_run_is_held_against_the_variant_its_config_gin_records(tmp_path):
    """A `mean` and a `select` run have the same parameters: textchem-eval/-infer of a `select` run with the default
    models/e2clm_small.gin (`mean`) decoded other text without a word. Freezing is held against a resume only; a new
    run starting from a run may be another variant of its parameters (review: a `select` run from a `mean` one was
    refused, with no way around it)."""
    from helpers import tiny_e2clm

    from textchem_jax.model_loading import check_recorded_architecture

    select = str(_recorded_run(tmp_path / "select", "e2clm.e2clm_config.aggregation = 'select'"))
    check_recorded_architecture(tiny_e2clm(aggregation="select"), select, "orbax")
    with pytest.raises(ValueError, match=rf"^{select}/config\.gin records another model: aggregation='select' \(the "
                                         r"model has 'mean'; bind --gin\.e2clm\.e2clm_config\.aggregation=\"'select'\""
                                         r"\); bind the model the run was trained with"):  # fmt: skip
        check_recorded_architecture(tiny_e2clm(aggregation="mean"), select, "orbax")
    check_recorded_architecture(tiny_e2clm(aggregation="mean"), select, "orbax", starting=True)
    frozen = str(_recorded_run(tmp_path / "frozen", "e2clm.e2clm_config.freeze_text = True"))
    check_recorded_architecture(tiny_e2clm(), frozen, "orbax")  # evaluated, or started from, trained on
    with pytest.raises(ValueError, match=r"freeze_text=True \(the model has False; bind --gin\.e2clm\.e2clm_config\."
                                         r"freeze_text=\"True\": the optimizer state keeps no moments for a frozen "
                                         rf"part.*initial_checkpoint_path=\"'{frozen}'\"\)"):  # fmt: skip
        check_recorded_architecture(tiny_e2clm(), frozen, "orbax", resuming=True)
    shared = str(_recorded_run(tmp_path / "shared", "e2clm.e2clm_config.shared = True"))
    check_recorded_architecture(tiny_e2clm(shared=True, aggregation="select"), shared, "orbax")  # both are T5
    with pytest.raises(ValueError, match=r"records another model: shared=True \(the model has False; bind "
                                         r"--gin\.e2clm\.e2clm_config\.shared=\"True\"\)"):  # fmt: skip
        check_recorded_architecture(tiny_e2clm(), shared, "orbax")


def test_resuming_a_run_as_another_variant_is_refused_before_its_config_gin_is_rewritten(tmp_path):
    """A `mean` run resumed with aggregation='select' was accepted: its config.gin rewritten with 'select', then
    tf.data stopped at the first batch (`Expected 9 components but got 8`: the restored iterator has no
    input_domain). An unfrozen part was refused as "another optimizer"."""
    from helpers import LENGTHS, tiny_e2clm

    from textchem_jax import train as train_lib
    from textchem_jax.run_config import DatasetConfig

    run = _recorded_run(tmp_path / "run", "e2clm.e2clm_config.freeze_chemistry = True")
    recorded, described = (run / "config.gin").read_bytes(), []

    def resume(model):
        train_lib.train(model=model, model_dir=str(run), optimizer=optax.adamw(1e-3), total_steps=1,
                        train_dataset_cfg=DatasetConfig("textchem_demo", LENGTHS, "train", batch_size=4),
                        started=lambda: described.append(model))  # fmt: skip

    with pytest.raises(ValueError, match=r"aggregation='mean' \(the model has 'select'; bind --gin\.e2clm\."
                                         r"e2clm_config\.aggregation=\"'mean'\"\); resume it with the model it was "
                                         r"trained with"):  # fmt: skip
        resume(tiny_e2clm(aggregation="select", freeze_chemistry=True))
    with pytest.raises(ValueError, match=r"freeze_chemistry=True \(the model has False; .* start another MODEL_DIR"):
        resume(tiny_e2clm())
    assert not described and (run / "config.gin").read_bytes() == recorded


def _converted_t5(directory, vocabulary_path: str, seed: int = 0) -> str:
    """A textchem-convert-like folder of a tiny T5 v1.0 (the T5 of `tiny_e2clm`) with the SentencePiece model given."""
    import shutil

    import flax.linen as nn

    from helpers import tiny_t5
    from textchem_jax.model_loading import write_params

    directory.mkdir()
    write_params(directory, nn.meta.unbox(tiny_t5("1.0").init(jax.random.key(seed))))
    shutil.copy(vocabulary_path, directory / "spiece.model")
    return str(directory)


def test_parts_of_another_vocabulary_are_named_together(tmp_path):
    """A part of another vocabulary was told to set TEXTCHEM_VOCABULARY to its own, which a variant binding
    VOCABULARY itself (variant A: the text checkpoint's) does not read, and which breaks the other parts."""
    import flax.linen as nn
    from sentencepiece import sentencepiece_model_pb2

    from helpers import tiny_e2clm
    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.model_loading import initial_params

    default = vocabularies.default_vocabulary()
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(open(vocabularies.vocabulary_file(default), "rb").read())
    proto.pieces[10].piece, proto.pieces[11].piece = proto.pieces[11].piece, proto.pieces[10].piece
    (tmp_path / "swapped.model").write_bytes(proto.SerializeToString())
    ours = _converted_t5(tmp_path / "ours", vocabularies.vocabulary_file(default))
    theirs = _converted_t5(tmp_path / "theirs", str(tmp_path / "swapped.model"), seed=1)
    model = dataclasses.replace(tiny_e2clm(freeze_text=True), vocabulary=default)
    like, mesh = nn.meta.unbox(model.init(jax.random.key(0))), partitioning.make_mesh()
    with pytest.raises(ValueError, match=rf"^an e2-CLM's parts and VOCABULARY must share one SentencePiece model .*: "
                                         rf"the chemistry part \({theirs}\) brings {theirs}/spiece\.model; start every "
                                         r"part from checkpoints trained with one vocabulary") as error:  # fmt: skip
        initial_params(model, {"text": ours, "chemistry": theirs, "decoder": ours}, mesh, like)
    assert "TEXTCHEM_VOCABULARY" not in str(error.value)
    with pytest.raises(ValueError, match=rf": the text part \({theirs}\) brings {theirs}/spiece\.model; the "
                                         rf"chemistry part .*; the decoder part .*; bind theirs: "
                                         rf"\"--gin\.VOCABULARY=@vocabularies\.load_vocabulary\(\)\" "
                                         rf"--gin\.vocabularies\.load_vocabulary\.path=\"'{theirs}/spiece\.model'\"$"):
        initial_params(model, {"text": theirs, "chemistry": theirs, "decoder": theirs}, mesh, like)
    params, step = initial_params(model, {"text": ours, "chemistry": ours, "decoder": ours}, mesh, like)
    assert step == 0 and set(params) == set(like)


def test_an_e2clm_run_given_as_a_part_is_named_as_one(tmp_path):
    """An e2-CLM run as a part was "a starting checkpoint of another model: bind the model it holds", which cannot
    make it a part; and a T5 fine-tuned from one started from random weights with "initialized from RUN" (probe:
    its first loss was the scratch run's to the digit), where textchem-eval refuses the same pair."""
    import flax.linen as nn

    from helpers import tiny_e2clm, tiny_t5
    from textchem_jax import checkpoints as ckpt
    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.model_loading import initial_params

    routed = tiny_e2clm(aggregation="select")
    saving = ckpt.Checkpoints(str(tmp_path / "run" / "checkpoints"))
    saving.save(1, {"params": nn.meta.unbox(routed.init(jax.random.key(0)))})
    saving.close()
    t5 = _converted_t5(tmp_path / "t5", vocabularies.DEFAULT_VOCABULARY_PATH)
    model = tiny_e2clm(freeze_text=True)
    with pytest.raises(ValueError, match=rf"^the chemistry part: {tmp_path / 'run'} is an e2-CLM checkpoint "
                                         r"\(parameters chemistry_encoder, decoder, text_encoder, token_embedder\), "
                                         r"and a part must be a T5 checkpoint"):  # fmt: skip
        initial_params(model, {"text": t5, "chemistry": str(tmp_path / "run"), "decoder": t5},
                       partitioning.make_mesh(), nn.meta.unbox(model.init(jax.random.key(1))))  # fmt: skip
    t5_model = tiny_t5("1.0")
    with pytest.raises(ValueError, match=r"parameter \['encoder'\]\S* is not in the checkpoint"):
        initial_params(t5_model, str(tmp_path / "run"), partitioning.make_mesh(),
                       nn.meta.unbox(t5_model.init(jax.random.key(1))))  # fmt: skip


@pytest.mark.needs_hf
def test_an_encoder_alone_starts_a_text_or_chemistry_part(tmp_path):
    """The paper's variant A takes its encoders from pretrained language encoders: a T5EncoderModel folder as a
    part failed with the list of decoder tensors it lacks. It starts a text or chemistry part exactly; the decoder,
    or a whole model, needs a full T5, said in one line."""
    pytest.importorskip("transformers")
    import flax.linen as nn
    from transformers import T5EncoderModel

    from helpers import tiny_e2clm, tiny_t5
    from textchem_jax.model_loading import initial_params, load_for_inference
    from textchem_jax.models import hf_convert

    t5 = tiny_t5("1.0")
    t5_params = nn.meta.unbox(t5.init(jax.random.key(3)))
    full = str(hf_convert.save_hf_directory(tmp_path / "full", t5.t5_config, t5_params))
    encoder = str(tmp_path / "encoder")
    T5EncoderModel.from_pretrained(full).save_pretrained(encoder)
    model = tiny_e2clm(freeze_text=True, freeze_chemistry=True, own_embeddings=True)
    like, mesh = nn.meta.unbox(model.init(jax.random.key(0))), partitioning.make_mesh()
    params, _ = initial_params(model, {"text": encoder, "chemistry": encoder, "decoder": full}, mesh, like)
    for ours, theirs in (("text_encoder", "encoder"), ("chemistry_embedder", "token_embedder"), ("decoder", "decoder")):
        leaves = zip(jax.tree_util.tree_leaves(params[ours]), jax.tree_util.tree_leaves(t5_params[theirs]), strict=True)
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in leaves), ours
    alone = rf"{encoder} holds a T5 encoder alone \(config\.json: T5EncoderModel\), and"
    with pytest.raises(ValueError, match=rf"^the decoder part: {alone} the decoder needs a full encoder-decoder T5"):
        initial_params(model, {"text": encoder, "chemistry": encoder, "decoder": encoder}, mesh, like)
    with pytest.raises(ValueError, match=rf"^{alone} a whole model needs a full encoder-decoder T5"):
        load_for_inference(t5, encoder, mesh)
