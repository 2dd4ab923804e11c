"""Hugging Face parity: import tiny random HF T5s (v1.0 tied, v1.1 untied; safetensors and .bin), compare
logits and greedy decoding with transformers, export back losslessly, and the textchem-convert CLI.

Tests that need torch/transformers (the optional `hf` extra) skip when they are not installed.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest
import sentencepiece as spm
from helpers import predict

from textchem_jax import convert, launch, model_loading
from textchem_jax.data import vocabulary as vocab_lib
from textchem_jax.models import decoding, hf_convert, layers, t5
from textchem_jax.models.adapters import EncoderDecoderModel
from textchem_jax.models.config import T5Config, t5_config

pytestmark = pytest.mark.needs_hf

SKIP_REASON = "torch and transformers (the `hf` extra: pip install -e .[hf]) are needed for Hugging Face parity"
VOCAB = 1152  # the rows of the demo vocabulary (VOCABULARY_MODEL) the converted models are given
MAX_DECODE_LENGTH = 10
VOCABULARY_MODEL = pathlib.Path(__file__).parents[1] / "textchem_jax" / "data" / "vocab" / "textchem_demo.model"

CASES = {
    # name: (feed_forward_proj, tie_word_embeddings / v1.0 scaling, how the weights are stored). A whole
    # pytorch_model.bin, as GT4SD's folders hold it, is read in test_released_checkpoints.
    "v1.0": ("relu", True, "safetensors shards"),  # save_pretrained splits a model over max_shard_size
    "v1.1": ("gated-gelu", False, "safetensors"),
    "v1.1-bin": ("gated-gelu", False, "bin shards"),  # the legacy format of large checkpoints
}


def hf_modules():
    torch = pytest.importorskip("torch", reason=SKIP_REASON)
    transformers = pytest.importorskip("transformers", reason=SKIP_REASON)
    return torch, transformers


def encoder_batch(vocab: int = VOCAB) -> np.ndarray:
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, vocab, size=(6, 12)).astype(np.int64)
    for row, length in enumerate([12, 8, 3, 10, 6, 12]):
        tokens[row, length:] = 0
    return tokens


def target_batch(vocab: int = VOCAB) -> np.ndarray:
    rng = np.random.default_rng(1)
    tokens = rng.integers(2, vocab, size=(6, 9)).astype(np.int64)
    for row, length in enumerate([9, 5, 2, 7, 9, 1]):
        tokens[row, length - 1] = decoding.EOS_ID
        tokens[row, length:] = 0
    return tokens


def shift_right(targets: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)


def hf_logits(model, encoder: np.ndarray, targets: np.ndarray) -> np.ndarray:
    torch, _ = hf_modules()
    with torch.no_grad():
        output = model(
            input_ids=torch.tensor(encoder),
            attention_mask=torch.tensor((encoder > 0).astype(np.int64)),
            decoder_input_ids=torch.tensor(shift_right(targets)),
            decoder_attention_mask=torch.tensor((targets > 0).astype(np.int64)),
        )
    return output.logits.numpy()


def hf_greedy(model, encoder: np.ndarray) -> np.ndarray:
    """HF greedy tokens without the start token, padded with 0 to MAX_DECODE_LENGTH."""
    torch, _ = hf_modules()
    with torch.no_grad():
        output = model.generate(
            input_ids=torch.tensor(encoder), attention_mask=torch.tensor((encoder > 0).astype(np.int64)),
            num_beams=1, do_sample=False, max_new_tokens=MAX_DECODE_LENGTH,
            # transformers 5.24 sizes its generation cache by num_layers, which breaks a decoder deeper than
            # the encoder (as here, to test the layer mapping); without the cache HF recomputes every step.
            use_cache=False,
        )  # fmt: skip
    tokens = output.numpy()[:, 1:]
    return np.pad(tokens, ((0, 0), (0, MAX_DECODE_LENGTH - tokens.shape[1])))


def eos_stops(tokens: np.ndarray) -> list[int | None]:
    return [int(np.argmax(row == decoding.EOS_ID)) if (row == decoding.EOS_ID).any() else None for row in tokens]


@dataclasses.dataclass
class HFCase:
    name: str
    model: object  # transformers.T5ForConditionalGeneration, eval mode
    directory: pathlib.Path


@pytest.fixture(scope="module", params=list(CASES))
def hf_case(request, tmp_path_factory) -> HFCase:
    torch, transformers = hf_modules()
    feed_forward, tied, storage = CASES[request.param]
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=20, feed_forward_proj=feed_forward,
        tie_word_embeddings=tied, decoder_start_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(config).eval()
    if not tied:  # transformers 5 ties a fresh v1.1 head to the embedding; real v1.1 checkpoints have their own
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight))
    # Scale the EOS output row until greedy decoding stops early for some sequences and not for others,
    # so the per-sequence EOS handling is compared too.
    encoder = encoder_batch()
    with torch.no_grad():
        eos_row = model.lm_head.weight[decoding.EOS_ID].clone()
        for scale in (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0):
            model.lm_head.weight[decoding.EOS_ID] = eos_row * scale
            stops = eos_stops(hf_greedy(model, encoder))
            if None in stops and any(stops):
                break
        else:
            pytest.fail(f"no EOS scale gives mixed greedy stops for {request.param}")
    directory = tmp_path_factory.mktemp(request.param)
    if storage.startswith("safetensors"):
        model.save_pretrained(directory, max_shard_size="20KB" if storage.endswith("shards") else "5GB")
        assert (directory / "model.safetensors.index.json").exists() == storage.endswith("shards")
    else:
        # transformers 5 only writes safetensors (save_pretrained has no safe_serialization any more); the
        # legacy format is torch.save of the full state dict, tied embedding copies included, here in two
        # shards with the index transformers 4 wrote beside them.
        model.config.save_pretrained(directory)
        state = model.state_dict()
        assert "encoder.embed_tokens.weight" in state
        names = sorted(state)
        shards = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
        for shard, shard_names in shards.items():
            torch.save({name: state[name] for name in shard_names}, directory / shard)
        weight_map = {name: shard for shard, shard_names in shards.items() for name in shard_names}
        (directory / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return HFCase(request.param, model, directory)


# ----------------------------------------------------------------------------------------------------------
# Pure conversion logic (no torch needed)


def test_a_missing_or_empty_hf_dir_says_what_to_give(tmp_path, capsys):
    """A hub name or a wrong folder as --hf_dir gave `[Errno 2] No such file or directory: 't5-small/config.json'`."""
    (tmp_path / "empty").mkdir()
    for hf_dir, what in (("t5-small", "t5-small is not a folder here"), (tmp_path / "empty", "empty holds no config.json")):
        assert convert.main([f"--hf_dir={hf_dir}", f"--output_dir={tmp_path / 'out'}"]) == 2
        error = capsys.readouterr().err
        assert what in error and "nothing is downloaded" in error and "Errno" not in error
    assert not (tmp_path / "out").exists()


def test_weights_of_another_size_than_config_json_name_the_first_tensor_and_the_fix():
    """A config.json of another size than its weights printed a dict of 8 (found, expected) shapes, 700 characters."""
    config = t5_config("tiny", "1.1", vocab_size=VOCAB)
    state = {name: np.zeros(shape, np.float32) for name, shape in hf_convert.expected_shapes(config).items()}
    state["shared.weight"] = np.zeros((VOCAB, config.d_model * 2), np.float32)
    with pytest.raises(ValueError, match=rf"1 of {len(state)} differ, first shared.weight \({VOCAB}, {config.d_model * 2}\) "
                                         rf"where the config makes \({VOCAB}, {config.d_model}\): config.json describes another model"):
        hf_convert.params_from_hf_state_dict(state, config)


def test_hf_config_mapping_both_transformers_generations():
    base = dict(model_type="t5", vocab_size=32128, d_model=512, d_kv=64, d_ff=1024, num_heads=6, num_layers=8,
                feed_forward_proj="gated-gelu")  # fmt: skip
    v4_style = hf_convert.config_from_hf({**base, "tie_word_embeddings": False})
    v5_style = hf_convert.config_from_hf({**base, "tie_word_embeddings": True, "scale_decoder_outputs": False})
    assert v4_style == v5_style == t5_config("small", "1.1")
    v1_0 = hf_convert.config_from_hf(
        {**base, "d_ff": 2048, "num_heads": 8, "num_layers": 6, "feed_forward_proj": "relu"}
    )
    assert v1_0 == t5_config("small", "1.0")
    for config in (v1_0, v4_style):
        assert hf_convert.config_from_hf(hf_convert.hf_config_from(config)) == config
    with pytest.raises(ValueError, match="feed_forward_proj"):
        hf_convert.config_from_hf({**base, "feed_forward_proj": "gated-silu"})


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_name_table_covers_every_parameter_once(version):
    config = t5_config("tiny", version)
    shapes = jax.eval_shape(lambda: nn.meta.unbox(t5.init_params(config, jax.random.key(0))))
    ours = {tuple(k.key for k in path): leaf.shape for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]}
    table = hf_convert.hf_parameter_map(config)
    assert sorted(path for _, path, _ in table) == sorted(ours)
    hf_shapes = hf_convert.expected_shapes(config)
    for hf_name, path, transposed in table:
        assert hf_shapes[hf_name] == (ours[path][::-1] if transposed else ours[path])


def test_relative_position_buckets_match_hf():
    torch, _ = hf_modules()
    from transformers.models.t5.modeling_t5 import T5Attention

    relative = np.arange(-3000, 3000)
    for bidirectional in (True, False):
        for num_buckets, max_distance in ((32, 128), (8, 20), (64, 256)):
            expected = T5Attention._relative_position_bucket(
                torch.tensor(relative), bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
            ).numpy()
            ours = np.asarray(layers.relative_position_bucket(relative, bidirectional, num_buckets, max_distance))
            np.testing.assert_array_equal(ours, expected)


# ----------------------------------------------------------------------------------------------------------
# Parity with transformers


def test_imported_logits_match_hf(hf_case):
    config, params = hf_convert.load_hf_directory(hf_case.directory)
    assert config.tie_word_embeddings == (hf_case.name == "v1.0")
    assert config.feed_forward == ("relu" if hf_case.name == "v1.0" else "gated-gelu")
    assert config.num_encoder_layers == 2 and config.num_decoder_layers == 3
    encoder, targets = encoder_batch(), target_batch()
    expected = hf_logits(hf_case.model, encoder, targets)
    logits = jax.jit(t5.T5(config).apply)({"params": params}, encoder, shift_right(targets), targets)
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=1e-5)

    # The same weights in the scanned layout give the same logits.
    scanned_config, scanned = hf_convert.load_hf_directory(hf_case.directory, scan_layers=True)
    assert "layers" in scanned["encoder"] and "layers" in scanned["decoder"]
    logits = jax.jit(t5.T5(scanned_config).apply)({"params": scanned}, encoder, shift_right(targets), targets)
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=1e-5)


def test_greedy_decoding_matches_hf_generate(hf_case):
    config, params = hf_convert.load_hf_directory(hf_case.directory)
    encoder = encoder_batch()
    expected = hf_greedy(hf_case.model, encoder)
    stops = eos_stops(expected)
    assert None in stops and any(stops)  # some sequences stop early, some run to the maximum length
    ours, _ = predict(EncoderDecoderModel(config), params, {"encoder_input_tokens": encoder}, max_decode_length=MAX_DECODE_LENGTH)
    ours = np.asarray(ours)[:, 0]
    np.testing.assert_array_equal(ours, expected)


def test_export_is_lossless_and_loads_in_hf(hf_case, tmp_path):
    _, transformers = hf_modules()
    config, params = hf_convert.load_hf_directory(hf_case.directory)
    exported = hf_convert.save_hf_directory(tmp_path / "export", config, params, vocabulary_path=VOCABULARY_MODEL)
    assert (exported / "spiece.model").read_bytes() == VOCABULARY_MODEL.read_bytes()
    again_config, again = hf_convert.load_hf_directory(exported)
    assert again_config == config
    assert jax.tree_util.tree_structure(again) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(params)):
        assert a.dtype == b.dtype and np.array_equal(a, b)

    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(exported).eval()
    encoder, targets = encoder_batch(), target_batch()
    np.testing.assert_allclose(
        hf_logits(reloaded, encoder, targets), hf_logits(hf_case.model, encoder, targets), atol=1e-6, rtol=1e-6
    )


@pytest.mark.parametrize("hf_case", ["v1.1"], indirect=True)  # one case is enough for the CLI plumbing
def test_convert_cli_round_trip(hf_case, tmp_path, capsys):
    import gin

    _, transformers = hf_modules()
    converted, exported = tmp_path / "converted", tmp_path / "hf"
    assert convert.main([f"--hf_dir={hf_case.directory}", f"--output_dir={converted}",
                         f"--vocabulary={VOCABULARY_MODEL}"]) == 0  # fmt: skip
    assert {p.name for p in converted.iterdir()} >= {"params.npz", "t5_config.json", "model.gin", "spiece.model"}
    config = T5Config.from_dict(json.loads((converted / "t5_config.json").read_text()))

    gin.clear_config()
    try:
        gin.parse_config((converted / "model.gin").read_text())
        from_gin = gin.query_parameter("%MODEL_CONFIG").scoped_configurable_fn()
        assert gin.query_parameter("%VOCABULARY_PATH") == str((converted / "spiece.model").resolve())
    finally:
        gin.clear_config()
    assert from_gin == config
    # Its dropout rate is DROPOUT_RATE, as in models/*.gin: runs/finetune.gin's and the command line's take effect.
    # Bound as a value, `--gin.DROPOUT_RATE` was refused as unused, and config.gin said 0.1 of a run without dropout.
    run = ["runs/finetune.gin"], [f"{macro} = {value!r}" for macro, value in (
        ("MODEL_DIR", "/tmp/unused"), ("MIXTURE_OR_TASK_NAME", "textchem_demo"), ("TRAIN_STEPS", 1),
        ("TASK_FEATURE_LENGTHS", {"inputs": 8, "targets": 8}), ("INITIAL_CHECKPOINT_PATH", str(converted)))]  # fmt: skip
    for files, bindings, rate in (([], [], config.dropout_rate), ([], ["DROPOUT_RATE = 0.25"], 0.25), (*run, 0.1),
                                  (run[0], [*run[1], "DROPOUT_RATE = 0.25"], 0.25)):  # fmt: skip
        launch.parse_gin([str(converted / "model.gin"), *files], bindings)
        try:
            assert gin.query_parameter("%MODEL_CONFIG").scoped_configurable_fn().dropout_rate == rate
        finally:
            gin.clear_config()
    # The converted parameters load in either layer layout.
    stacked = model_loading.read_params(converted, dataclasses.replace(config, scan_layers=True))
    assert "layers" in stacked["decoder"] and "layers_0" not in stacked["decoder"]
    assert "layers_2" in model_loading.read_params(converted, config)["decoder"]

    # --vocabulary is checked before anything is written: any file was copied as spiece.model (a tokenizer then
    # failed on it), another vocabulary's was taken as is, and a missing one failed after the weights were written.
    (tmp_path / "notes.txt").write_text("not a model")
    small = vocab_lib.train_vocabulary(["CCO", "c1ccccc1", "The molecule is an alcohol."] * 20, tmp_path / "small",
                                       vocab_size=400, hard_vocab_limit=False)  # fmt: skip
    for wrong, said in ((tmp_path / "notes.txt", "is not a SentencePiece model"), (tmp_path / "none.model", "no SentencePiece model at"),
                        (small, f"but the checkpoint's embedding has {config.vocab_size:,} rows")):  # fmt: skip
        assert convert.main([f"--checkpoint_dir={converted}", f"--hf_output_dir={exported}", f"--vocabulary={wrong}"]) == 2
        assert said in capsys.readouterr().err and not exported.exists()
        assert convert.main([f"--hf_dir={hf_case.directory}", f"--output_dir={tmp_path / 'again'}", f"--vocabulary={wrong}"]) == 2
        assert said in capsys.readouterr().err and not (tmp_path / "again").exists()
    assert convert.main([f"--checkpoint_dir={converted}", f"--hf_output_dir={exported}"]) == 0
    assert {"spiece.model", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in exported.iterdir()}
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(exported).eval()
    encoder, targets = encoder_batch(), target_batch()
    np.testing.assert_array_equal(hf_logits(reloaded, encoder, targets), hf_logits(hf_case.model, encoder, targets))


def test_a_model_resized_to_its_tokenizer_imports_runs_and_exports(tmp_path, capsys):
    """An embedding of one row per id (`resize_token_embeddings(len(tokenizer))`: 32,100 for T5's vocabulary, not
    the padded 32,128) was refused with its own spiece.model ("give the vocabulary it was trained with"), and binding
    its vocab_size was refused too."""
    torch, transformers = hf_modules()
    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.data.demo import demo_data_dir

    texts = [line for p in sorted(demo_data_dir().rglob("*.txt")) for line in p.read_text().splitlines()]
    spiece = vocabularies.train_plain_vocabulary(texts, tmp_path / "t5_like", vocab_size=600)
    rows = vocabularies.load_vocabulary(spiece).vocab_size  # 600 pieces + 100 sentinels, unpadded
    assert rows == 700 < vocabularies.padded_vocab_size(vocabularies.load_vocabulary(spiece))
    config = transformers.T5Config(vocab_size=rows, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                   dropout_rate=0.0, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                                   decoder_start_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    hf_model = transformers.T5ForConditionalGeneration(config).eval()
    hf_model.save_pretrained(tmp_path / "hf")
    capsys.readouterr()
    assert convert.main([f"--hf_dir={tmp_path / 'hf'}", f"--output_dir={tmp_path / 'bare'}"]) == 0  # no spiece.model
    warned = capsys.readouterr().err  # it said nothing, and the first evaluation failed with another fix
    assert "so the converted model.gin uses the tasks' vocabulary" in warned and "does not fit its 700-row embedding" in warned
    transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", vocab_file=str(spiece)).save_pretrained(tmp_path / "hf")
    assert not (tmp_path / "hf" / "spiece.model").exists()  # transformers 5 saves tokenizer.json alone: not read
    assert convert.main([f"--hf_dir={tmp_path / 'hf'}", f"--output_dir={tmp_path / 'fast'}"]) == 0
    assert (f"{tmp_path / 'hf'} has no spiece.model (only tokenizer.json, which is not a SentencePiece model: its "
            "spiece.model is needed)") in capsys.readouterr().err  # fmt: skip
    shutil.copyfile(spiece, tmp_path / "hf" / "spiece.model")
    assert convert.main([f"--hf_dir={tmp_path / 'hf'}", f"--output_dir={tmp_path / 'ours'}"]) == 0
    assert "warning" not in capsys.readouterr().err
    ours_config = T5Config.from_dict(json.loads((tmp_path / "ours" / "t5_config.json").read_text()))
    assert ours_config.vocab_size == rows
    params = model_loading.read_params(tmp_path / "ours", ours_config)
    encoder, targets = encoder_batch(rows), target_batch(rows)
    ours = np.asarray(jax.jit(t5.T5(ours_config).apply)({"params": params}, encoder, shift_right(targets), targets))
    np.testing.assert_allclose(ours, hf_logits(hf_model, encoder, targets), atol=1e-4, rtol=1e-4)
    model = EncoderDecoderModel(ours_config, vocabulary=vocabularies.load_vocabulary(tmp_path / "ours" / "spiece.model"))
    from textchem_jax.run_config import import_task_module

    import_task_module(None, model)  # the tasks take its vocabulary (this refused 700 rows for 768)
    assert convert.main([f"--checkpoint_dir={tmp_path / 'ours'}", f"--hf_output_dir={tmp_path / 'back'}"]) == 0
    assert json.loads((tmp_path / "back" / "config.json").read_text())["vocab_size"] == rows


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_extended_t5_vocabulary_writes_stereo_and_keeps_the_old_logits(tmp_path, version):
    """T5-like vocabulary without `\\`: the extended import round-trips cis/trans SMILES with 0 <unk>, and
    its grown embedding gives the original model's logits on every old token."""
    torch, transformers = hf_modules()
    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.data.demo import demo_data_dir

    texts = [line.replace("\\", "") for p in sorted(demo_data_dir().rglob("*.txt")) for line in p.read_text().splitlines()]
    spiece = vocabularies.train_plain_vocabulary(texts, tmp_path / "t5_like", vocab_size=600)
    original = vocabularies.load_vocabulary(spiece)
    stereo = "C/C=C\\C"
    assert original.tokenizer.unk_id() in original.encode(stereo)  # like T5's: `\` is unknown
    rows = vocabularies.padded_vocab_size(original)  # 600 pieces + 100 sentinels -> 768
    config = transformers.T5Config(
        vocab_size=rows, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, dropout_rate=0.0,
        feed_forward_proj="relu" if version == "1.0" else "gated-gelu", tie_word_embeddings=version == "1.0",
        decoder_start_token_id=0,
    )  # fmt: skip
    config.scale_decoder_outputs = version == "1.0"
    hf_model = transformers.T5ForConditionalGeneration(config).eval()
    hf_model.save_pretrained(tmp_path / "hf")
    shutil.copyfile(spiece, tmp_path / "hf" / "spiece.model")
    out = tmp_path / "converted"
    assert convert.main([f"--hf_dir={tmp_path / 'hf'}", f"--output_dir={out}", "--extend_vocabulary"]) == 0

    extended = vocabularies.load_vocabulary(out / "spiece.model")
    ids = extended.encode(stereo)
    assert extended.tokenizer.unk_id() not in ids and extended.decode(ids) == stereo
    assert extended.encode("the molecule") == original.encode("the molecule")  # old pieces keep their ids
    pieces = spm.SentencePieceProcessor(model_file=str(tmp_path / "hf" / "spiece.model")).GetPieceSize()
    added = spm.SentencePieceProcessor(model_file=str(out / "spiece.model")).GetPieceSize() - pieces
    assert (pieces, added) == (600, len(vocabularies.CHEMISTRY_CHARACTERS))  # all five were missing
    grown_config = T5Config.from_dict(json.loads((out / "t5_config.json").read_text()))
    params = model_loading.read_params(out, grown_config)
    assert grown_config.vocab_size == vocabularies.padded_vocab_size(extended)

    encoder, targets = encoder_batch(64), target_batch(64)  # ids < 64: old tokens of both vocabularies
    ours = np.asarray(jax.jit(t5.T5(grown_config).apply)({"params": params}, encoder, shift_right(targets), targets))
    expected = hf_logits(hf_model, encoder, targets)
    np.testing.assert_allclose(ours[..., :pieces], expected[..., :pieces], atol=1e-4, rtol=1e-4)
    # the sentinels moved up by the added pieces, with their rows
    np.testing.assert_allclose(ours[..., pieces + added : pieces + added + 100], expected[..., pieces : pieces + 100],
                               atol=1e-4, rtol=1e-4)  # fmt: skip


@pytest.mark.parametrize("hf_case", ["v1.1"], indirect=True)
def test_a_directory_whose_own_vocabulary_does_not_fit_is_refused_in_one_line(hf_case, tmp_path):
    """The directory's own spiece.model is checked as --vocabulary is (it once imported, and inference failed with
    a misleading fix); the error is one line, without TensorFlow's start-up lines (unless --verbose)."""
    import subprocess
    import sys

    folder = tmp_path / "hf"
    shutil.copytree(hf_case.directory, folder)
    small = vocab_lib.train_vocabulary(["CCO", "c1ccccc1", "The molecule is an alcohol."] * 20, tmp_path / "small",
                                       vocab_size=400, hard_vocab_limit=False)  # fmt: skip
    shutil.copyfile(small, folder / "spiece.model")
    command = [sys.executable, "-m", "textchem_jax.convert", f"--hf_dir={folder}", f"--output_dir={tmp_path / 'out'}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=pathlib.Path(__file__).parents[1])
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    wrong = vocab_lib.load_vocabulary(small)
    assert result.stderr.splitlines() == [
        f"textchem-convert: the directory's own vocabulary {folder / 'spiece.model'} has "
        f"{wrong.vocab_size:,} pieces ({vocab_lib.fitting_rows(wrong)}) but the "
        f"checkpoint's embedding has {VOCAB:,} rows: give the vocabulary it was trained with as --vocabulary"
    ]
    # The right vocabulary given wins over the directory's own.
    assert convert.main([f"--hf_dir={folder}", f"--output_dir={tmp_path / 'out'}", f"--vocabulary={VOCABULARY_MODEL}"]) == 0
    assert (tmp_path / "out" / "spiece.model").read_bytes() == VOCABULARY_MODEL.read_bytes()


@pytest.mark.parametrize("hf_case", ["v1.1"], indirect=True)
def test_an_imported_folders_generation_settings_and_max_length_come_back_in_its_export(hf_case, tmp_path, capsys):
    """GT4SD's folders decode with num_beams=10, max_length=512 (generation_config.json) and say model_max_length=512:
    the import -> export round trip dropped both (generate() then decoded greedily to 20 tokens), and the export wrote
    model_max_length=10**9 (padding='max_length' allocated 4 GB and aborted)."""
    _, transformers = hf_modules()
    folder = tmp_path / "gt4sd_like"
    shutil.copytree(hf_case.directory, folder)
    (folder / "generation_config.json").write_text(json.dumps(
        {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0, "num_beams": 10, "max_length": 512}))
    tokenizer_config = {"tokenizer_class": "T5Tokenizer", "model_max_length": 512}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    converted, exported = tmp_path / "converted", tmp_path / "hf"
    assert convert.main([f"--hf_dir={folder}", f"--output_dir={converted}", f"--vocabulary={VOCABULARY_MODEL}"]) == 0
    capsys.readouterr()
    assert convert.main([f"--checkpoint_dir={converted}", f"--hf_output_dir={exported}"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"exported {converted} -> {exported}: ")
    assert printed[1].startswith("load the tokenizer with AutoTokenizer: ")  # T5Tokenizer(Fast): `~`, `µ` <unk>
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(exported)
    assert (reloaded.generation_config.num_beams, reloaded.generation_config.max_length) == (10, 512)
    assert reloaded.config.textchem_jax == {"source": str(converted)}
    assert transformers.AutoTokenizer.from_pretrained(exported).model_max_length == 512
    # Imported again from a folder without them: the export writes our ids and no length limit.
    for name in ("generation_config.json", "tokenizer_config.json"):
        (folder / name).unlink()
    assert convert.main([f"--hf_dir={folder}", f"--output_dir={converted}", f"--vocabulary={VOCABULARY_MODEL}"]) == 0
    assert convert.main([f"--checkpoint_dir={converted}", f"--hf_output_dir={exported}"]) == 0
    assert json.loads((exported / "generation_config.json").read_text()) == {
        "decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}  # fmt: skip
    assert "model_max_length" not in json.loads((exported / "tokenizer_config.json").read_text())


@pytest.mark.parametrize("hf_case", ["v1.1"], indirect=True)
def test_an_export_into_another_models_folder_is_refused_naming_its_files(hf_case, tmp_path, capsys):
    """Exported into a GT4SD folder, its generation_config.json (num_beams=10), spiece.vocab, pytorch_model.bin and
    special_tokens_map.json stayed beside ours without a word. A folder of our export's files is a re-export."""
    converted, folder = tmp_path / "converted", tmp_path / "hf"
    assert convert.main([f"--hf_dir={hf_case.directory}", f"--output_dir={converted}", f"--vocabulary={VOCABULARY_MODEL}"]) == 0
    assert convert.main([f"--checkpoint_dir={converted}", f"--hf_output_dir={folder}"]) == 0
    assert convert.main([f"--checkpoint_dir={converted}", f"--hf_output_dir={folder}"]) == 0  # a re-export
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    for name in ("spiece.vocab", "pytorch_model.bin", "special_tokens_map.json"):
        (folder / name).write_text("another model's")
    capsys.readouterr()
    assert convert.main([f"--checkpoint_dir={converted}", f"--hf_output_dir={folder}"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"textchem-convert: {folder} holds files that are not an earlier export's (pytorch_model.bin, "
        "special_tokens_map.json, spiece.vocab): another model's, which transformers would read with ours or which the "
        "export would replace; remove them, or choose a new or empty folder"
    ]
    assert {path.name: path.read_bytes() for path in folder.iterdir() if path.name in before} == before  # untouched
    # Another model's save_pretrained of only the files an export writes (no record of ours) is not a re-export: its
    # tokenizer files were deleted. A git clone's own files (a Hub repository) were refused, with advice to delete .git.
    for name in ("spiece.vocab", "pytorch_model.bin", "special_tokens_map.json"):
        (folder / name).unlink()
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({key: value for key, value in config.items() if key != "textchem_jax"}))
    assert convert.main([f"--checkpoint_dir={converted}", f"--hf_output_dir={folder}"]) == 2
    assert "holds files that are not an earlier export's (config.json, generation_config.json" in capsys.readouterr().err
    (folder / "config.json").write_text(json.dumps(config))
    (folder / ".git").mkdir()
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs")
    (folder / "README.md").write_text("# model card")
    assert convert.main([f"--checkpoint_dir={converted}", f"--hf_output_dir={folder}"]) == 0
    assert (folder / ".git").is_dir() and (folder / "README.md").read_text() == "# model card"


@pytest.mark.slow
def test_a_runs_export_generates_as_the_run_decodes_and_says_which_step(tmp_path, capsys):
    """Without generation_config.json, `generate()` with no arguments decoded greedily to 20 tokens (all 8 mol2text
    predictions of a demo run cut short); the console and the folder did not say which step of the run was exported.
    Now max_new_tokens is the run's target length and num_beams its beams (config.gin), as our decoding."""
    import gin
    import torch
    from helpers import LENGTHS, search
    from test_training_behaviour import _train

    from textchem_jax import partitioning

    _, transformers = hf_modules()
    run, exported = tmp_path / "run", tmp_path / "hf"
    _train(run, train_steps=2)
    launch.parse_gin(["models/t5_1_1_tiny.gin", "runs/pretrain.gin"], [
        f"MODEL_DIR = {str(run)!r}", "MIXTURE_OR_TASK_NAME = 'textchem_demo'", "TRAIN_STEPS = 2",
        f"TASK_FEATURE_LENGTHS = {LENGTHS!r}", "train_lib.train.decode_fn = @beam_search.beam_search",
        "beam_search.beam_search.num_decodes = 3"])  # fmt: skip
    try:
        launch.write_config(str(run))  # the config.gin textchem-train writes for these settings
    finally:
        gin.clear_config()
    capsys.readouterr()
    assert convert.main([f"--checkpoint_dir={run / 'checkpoints'}", f"--hf_output_dir={exported}"]) == 0
    assert capsys.readouterr().out.startswith(f"exported step 2 of {run} -> {exported}: ")
    assert json.loads((exported / "config.json").read_text())["textchem_jax"] == {"step": 2, "source": str(run)}
    assert json.loads((exported / "tokenizer_config.json").read_text())["model_max_length"] == LENGTHS["inputs"]

    tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    hf_model = transformers.T5ForConditionalGeneration.from_pretrained(exported).eval()
    assert (hf_model.generation_config.num_beams, hf_model.generation_config.max_new_tokens) == (3, LENGTHS["targets"])
    texts = ["Caption the following SMILES: CCO", "Predict the product of the following reaction: CC(=O)Cl.OCC"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = hf_model.generate(**batch).numpy()[:, 1:]  # without the start token
    # Our decoding of the run's own checkpoint with its settings (its vocabulary is the export's spiece.model: what
    # an earlier test left as the tasks' vocabulary, which the gin-bound one need not be).
    model = dataclasses.replace(launch.saved_run(str(run)).model, vocabulary=None)
    params = model_loading.load_for_inference(model, str(run), partitioning.make_mesh())
    ours, _ = predict(model, params, {"encoder_input_tokens": batch.input_ids.numpy().astype(np.int32)},
                      max_decode_length=LENGTHS["targets"], decode_fn=search("beam", num_decodes=3))  # fmt: skip
    best = np.asarray(ours)[:, 0]
    np.testing.assert_array_equal(np.pad(theirs, ((0, 0), (0, best.shape[1] - theirs.shape[1]))), best)
    assert (best > 0).sum(axis=1).max() > 19  # past generate()'s default (max_length 20, the start token counted)
