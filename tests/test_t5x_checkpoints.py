"""T5X checkpoints in and out without T5X: directories in every layout T5X has written, made here with
tensorstore, msgpack and orbax the way T5X's checkpointers write them, read back exactly."""

from __future__ import annotations

import dataclasses
import functools
import sys

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorstore as ts
from flax import serialization
from helpers import tiny_t5

from textchem_jax import t5x_checkpoints


@functools.cache
def _params(version: str = "1.1") -> dict:
    model = tiny_t5(version)
    return jax.tree_util.tree_map(np.asarray, nn.meta.unbox(model.init(jax.random.key(3))))


def _t5x_target(params: dict) -> dict:
    """T5X's network tree: our names, the relative position tables as (heads, buckets)."""
    return {
        key: _t5x_target(value) if isinstance(value, dict) else (value.T if key == "rel_embedding" else value)
        for key, value in params.items()
    }


def _flat(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else key
        out.update(_flat(value, name) if isinstance(value, dict) else {name: value})
    return out


def _unflat(flat: dict) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def _tensorstore_leaves(directory, tree: dict, *, old_spec: bool) -> dict:
    """Each array written as zarr under `directory/<dotted name>`, replaced by the spec T5X stores."""
    specs = {}
    for name, array in _flat(tree).items():
        metadata = {"shape": list(array.shape), "chunks": list(array.shape), "compressor": {"id": "gzip"}}
        store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(directory / name)},
                         "metadata": metadata, "dtype": array.dtype.name}, create=True).result()  # fmt: skip
        store.write(array).result()
        if old_spec:  # tensorstore < 0.1.14: the path beside the kvstore, which names the folder it was written in
            specs[name] = {"driver": "zarr", "kvstore": {"driver": "file", "path": "/elsewhere/checkpoint_9"}, "path": name,
                           "metadata": metadata}  # fmt: skip
        else:
            specs[name] = {"driver": "zarr", "dtype": array.dtype.name, "kvstore": {"driver": "file", "path": name},
                           "metadata": metadata}  # fmt: skip
    return _unflat(specs)


def _optimizer_state(target: dict) -> dict:
    """Adafactor-like per-parameter states, as T5X keeps them under state/param_states."""
    return jax.tree_util.tree_map(lambda a: {"v_row": np.ones(a.shape[:1], np.float32), "v": np.zeros((1,), np.float32)}, target)


def _write_layout(directory, layout: str, params: dict, step: int):
    checkpoint = directory / f"checkpoint_{step}"
    checkpoint.mkdir(parents=True)
    target = _t5x_target(params)
    state = {"target": target, "state": {"step": np.int32(step), "param_states": _optimizer_state(target)}}
    if layout == "orbax_state":  # OrbaxCheckpointManagerInterface: the state dict as an orbax PyTree in state/
        ocp.PyTreeCheckpointer().save(checkpoint / "state", state)
        return
    if layout in ("v3_tensorstore", "v3_old_spec"):
        state = {**state, "target": _tensorstore_leaves(checkpoint, {"target": target}, old_spec=layout == "v3_old_spec")["target"]}
    if layout == "params_only":
        state = {"target": target}
    contents = state if layout == "v0_flax" else {"version": 3, "optimizer": state}
    (checkpoint / "checkpoint").write_bytes(serialization.msgpack_serialize(contents))


def _assert_same(read: dict, expected: dict) -> None:
    assert jax.tree_util.tree_structure(read) == jax.tree_util.tree_structure(expected)
    for got, want in zip(jax.tree_util.tree_leaves(read), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype


@pytest.mark.parametrize("layout", ["v3_tensorstore", "v3_old_spec", "v3_msgpack_only", "v0_flax", "orbax_state", "params_only"])
def test_every_t5x_layout_reads_back_our_parameters(tmp_path, layout):
    params = _params()
    _write_layout(tmp_path, layout, params, step=7)
    for path in (tmp_path, tmp_path / "checkpoint_7"):  # a T5X MODEL_DIR (its latest) or the step folder itself
        read, step = t5x_checkpoints.read_checkpoint(str(path))
        _assert_same(read, params)
        assert step == 7
    state, _ = t5x_checkpoints.read_state(str(tmp_path))
    if layout != "params_only":
        assert set(state["state"]["param_states"]) == set(params)  # optimizer state is there when T5X wrote it


def test_latest_step_and_clear_errors(tmp_path):
    _write_layout(tmp_path, "v3_msgpack_only", _params(), step=2)
    _write_layout(tmp_path, "v3_msgpack_only", jax.tree_util.tree_map(lambda a: a + 1, _params()), step=10)
    assert t5x_checkpoints.checkpoint_directory(str(tmp_path)).endswith("checkpoint_10")  # numeric, not text order
    read, step = t5x_checkpoints.read_checkpoint(str(tmp_path))
    assert step == 10 and np.array_equal(read["token_embedder"]["embedding"], _params()["token_embedder"]["embedding"] + 1)
    with pytest.raises(FileNotFoundError, match=r"checkpoint_<step>"):
        t5x_checkpoints.read_checkpoint(str(tmp_path / "missing"))
    (tmp_path / "ours" / "checkpoints" / "4").mkdir(parents=True)  # a textchem-train run, given to T5X to start from
    with pytest.raises(FileNotFoundError, match=rf"it is a textchem-train run: give T5X `textchem-convert "
                                                rf"--checkpoint_dir={tmp_path / 'ours'} --t5x_output_dir=DIR`'s DIR$"):  # fmt: skip
        t5x_checkpoints.checkpoint_directory(str(tmp_path / "ours"))


def test_written_checkpoint_has_t5x_layout_and_round_trips(tmp_path):
    params = _params("1.0")
    path = t5x_checkpoints.write_checkpoint(str(tmp_path), params, step=12)
    contents = serialization.msgpack_restore((tmp_path / "checkpoint_12" / "checkpoint").read_bytes())
    assert contents["version"] == 3 and int(contents["optimizer"]["state"]["step"]) == 12
    spec = contents["optimizer"]["target"]["encoder"]["relpos_bias"]["rel_embedding"]
    assert spec["kvstore"] == {"driver": "file", "path": "target.encoder.relpos_bias.rel_embedding"}  # relative, as T5X
    stored = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": f"{path}/{spec['kvstore']['path']}"}}).result()
    np.testing.assert_array_equal(stored.read().result(), params["encoder"]["relpos_bias"]["rel_embedding"].T)
    read, step = t5x_checkpoints.read_checkpoint(path)
    _assert_same(read, params)
    assert step == 12 and not list(tmp_path.glob("*.tmp-*"))
    with pytest.raises(FileExistsError, match="never overwrites"):
        t5x_checkpoints.write_checkpoint(str(tmp_path), params, step=12)


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_config_from_parameter_shapes(version):
    assert t5x_checkpoints.config_from_params(_params(version)) == dataclasses.replace(tiny_t5(version).t5_config, dropout_rate=0.1)


@pytest.mark.needs_hf
def test_t5x_checkpoint_to_ours_to_hugging_face_with_equal_logits(tmp_path):
    """A T5X checkpoint (T5X's own layout, with optimizer state) -> textchem-convert -> our model and HF:
    logits equal to 1e-4; and back out as a T5X checkpoint holding the same parameters."""
    pytest.importorskip("transformers", reason="needs the hf extra")
    import torch
    import transformers

    from textchem_jax.convert import main as convert_main
    from textchem_jax.data import vocabulary as vocabularies

    params = _params("1.0")
    _write_layout(tmp_path / "t5x", "v3_tensorstore", params, step=5)
    ours, hf, back = tmp_path / "ours", tmp_path / "hf", tmp_path / "t5x_back"
    vocabulary = vocabularies.DEFAULT_VOCABULARY_PATH
    assert convert_main(["--t5x_checkpoint", str(tmp_path / "t5x"), "--output_dir", str(ours), "--vocabulary", str(vocabulary)]) == 0
    assert "T5X, step 5" in (ours / "model.gin").read_text() and (ours / "spiece.model").exists()
    assert convert_main(["--checkpoint_dir", str(ours), "--hf_output_dir", str(hf)]) == 0
    assert convert_main(["--checkpoint_dir", str(ours), "--t5x_output_dir", str(back)]) == 0
    _assert_same(t5x_checkpoints.read_checkpoint(str(back))[0], params)

    model = tiny_t5("1.0")
    rng = np.random.default_rng(0)
    inputs = rng.integers(2, 1000, (2, 9)).astype(np.int32)
    targets = rng.integers(2, 1000, (2, 6)).astype(np.int32)
    decoder_inputs = np.concatenate([np.zeros((2, 1), np.int32), targets[:, :-1]], axis=1)
    batch = {"encoder_input_tokens": inputs, "decoder_input_tokens": decoder_inputs, "decoder_target_tokens": targets}
    ours_logits = np.asarray(model.logits(params, batch))
    hf_model = transformers.T5ForConditionalGeneration.from_pretrained(hf).eval()
    with torch.no_grad():
        hf_logits = hf_model(input_ids=torch.tensor(inputs), decoder_input_ids=torch.tensor(decoder_inputs)).logits.numpy()
    difference = float(np.max(np.abs(ours_logits - hf_logits[..., : ours_logits.shape[-1]])))
    print(f"max |ours - Hugging Face| logit difference from a T5X checkpoint: {difference:.2e}", file=sys.stderr)
    assert difference < 1e-4


def test_evaluation_and_fine_tuning_read_t5x_and_hugging_face_checkpoints_directly(tmp_path):
    """CHECKPOINT_PATH / INITIAL_CHECKPOINT_PATH may name a T5X checkpoint (as `t5x.eval` takes one) or a Hugging
    Face directory: read as they are, no textchem-convert step; the layers stacked for a scanned model."""
    import json
    import re

    from helpers import tiny_e2clm

    from textchem_jax import partitioning
    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.model_loading import checkpoint_format, initial_params, load_for_inference, resolve_checkpoint, stored_param_names
    from textchem_jax.models.hf_convert import save_hf_directory
    from textchem_jax.models.t5 import stack_layer_params

    params, model, mesh = _params("1.0"), tiny_t5("1.0"), partitioning.make_mesh(devices=jax.devices()[:1])
    _write_layout(tmp_path / "t5x", "orbax_state", params, step=7)
    _write_layout(tmp_path / "t5x_msgpack", "v3_tensorstore", params, step=9)
    save_hf_directory(tmp_path / "hf", model.t5_config, params)
    cases = [(tmp_path / "t5x", "t5x", 7), (tmp_path / "t5x" / "checkpoint_7", "t5x", 7),
             (tmp_path / "t5x_msgpack", "t5x", 9), (tmp_path / "hf", "hf", 0)]  # fmt: skip
    for path, kind, step in cases:
        assert (checkpoint_format(str(path)), resolve_checkpoint(str(path))[1]) == (kind, step)
        assert stored_param_names(str(path)) == {"token_embedder", "encoder", "decoder"}
        _assert_same(jax.tree_util.tree_map(np.asarray, load_for_inference(model, str(path), mesh)), params)
    scanned = tiny_t5("1.0", scan_layers=True)
    _assert_same(jax.tree_util.tree_map(np.asarray, load_for_inference(scanned, str(tmp_path / "hf"), mesh)),
                 stack_layer_params(params))  # fmt: skip

    # An e2-CLM started from a T5X checkpoint: both encoders and the decoder are T5X's.
    e2clm = tiny_e2clm(aggregation="mean")
    fresh = nn.meta.unbox(e2clm.init(jax.random.key(0)))
    started, start_step = initial_params(e2clm, str(tmp_path / "t5x"), mesh, fresh)
    assert start_step == 0
    _assert_same(jax.tree_util.tree_map(np.asarray, started["decoder"]), params["decoder"])
    _assert_same(jax.tree_util.tree_map(np.asarray, started["text_encoder"]), params["encoder"])

    # A T5X run given as MODEL_DIR was trained from scratch beside its steps, its config.gin overwritten (probe).
    import optax

    from helpers import LENGTHS
    from textchem_jax import train as train_lib
    from textchem_jax.run_config import DatasetConfig

    before = sorted(p.name for p in (tmp_path / "t5x").iterdir())
    with pytest.raises(ValueError, match=rf"^{tmp_path / 't5x'} holds a T5X run \(its latest step: "
                                         rf"{tmp_path / 't5x' / 'checkpoint_7'}\), which textchem-train does not resume"):  # fmt: skip
        train_lib.train(model=model, model_dir=str(tmp_path / "t5x"), optimizer=optax.adamw(1e-3), total_steps=9,
                        train_dataset_cfg=DatasetConfig("textchem_demo", LENGTHS, "train", batch_size=4))  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "t5x").iterdir()) == before

    # What shapes cannot show must still match: another relative-position range would change every output.
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "relative_attention_max_distance": 64}))
    with pytest.raises(ValueError, match=r"config\.json describes another model: relative_attention_max_distance=64"):
        load_for_inference(model, str(tmp_path / "hf"), mesh)
    # Another vocabulary (T5's 32,128 rows against the demo vocabulary's): the fix names the checkpoint's own.
    large = tiny_t5("1.0", vocab_size=32128)
    save_hf_directory(tmp_path / "hf_t5", large.t5_config, nn.meta.unbox(large.init(jax.random.key(1))),
                      vocabularies.DEFAULT_VOCABULARY_PATH)  # fmt: skip
    with pytest.raises(ValueError, match=rf"vocab_size=32128 .*TEXTCHEM_VOCABULARY={re.escape(str(tmp_path / 'hf_t5' / 'spiece.model'))}"):
        load_for_inference(model, str(tmp_path / "hf_t5"), mesh)
    with pytest.raises(ValueError, match=r"token_embedder.*give the model it holds .*a VOCABULARY binding"):
        load_for_inference(tiny_t5("1.0", vocab_size=32128), str(tmp_path / "t5x"), mesh)
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("not a checkpoint")
    for path in (tmp_path / "empty", tmp_path / "file.txt", tmp_path / "missing"):
        with pytest.raises(FileNotFoundError, match="T5X checkpoint_<step> folder or MODEL_DIR"):
            load_for_inference(model, str(path), mesh)


def test_t5x_round_trip_keeps_what_shapes_cannot_show_and_the_vocabulary(tmp_path, capsys):
    """Our T5X export records the settings parameter shapes cannot show (a relative-position range of 64 and an
    epsilon of 1e-5 here) and the vocabulary; the import restores both. A checkpoint without the record (as T5X
    writes) imports with T5's values, said on stderr with the flag that gives others."""
    import json

    from textchem_jax import convert, partitioning
    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.model_loading import load_for_inference
    from textchem_jax.models.config import ARCHITECTURE_FIELDS, T5Config

    config = tiny_t5("1.1", relative_attention_max_distance=64, layer_norm_epsilon=1e-5).t5_config
    vocabulary = vocabularies.DEFAULT_VOCABULARY_PATH
    convert.write_converted(tmp_path / "ours", config, _params("1.1"), vocabulary, "test")
    t5x, step = tmp_path / "t5x", tmp_path / "t5x" / "checkpoint_0"
    assert convert.main(["--checkpoint_dir", str(tmp_path / "ours"), "--t5x_output_dir", str(t5x)]) == 0
    said = capsys.readouterr().err
    assert "relative_attention_max_distance=64, layer_norm_epsilon=1e-05 differ from T5's values" in said
    assert str(step / t5x_checkpoints.MODEL_SETTINGS_FILE) in said
    assert json.loads((step / t5x_checkpoints.MODEL_SETTINGS_FILE).read_text())["layer_norm_epsilon"] == 1e-5

    def imported(name: str, *flags: str) -> T5Config:
        assert convert.main(["--t5x_checkpoint", str(t5x), "--output_dir", str(tmp_path / name), *flags]) == 0
        return T5Config.from_dict(json.loads((tmp_path / name / "t5_config.json").read_text()))

    assert imported("back") == config and "records no model settings" not in capsys.readouterr().err
    assert (tmp_path / "back" / "spiece.model").read_bytes() == vocabulary.read_bytes()  # the checkpoint's own, no flag
    _assert_same(t5x_checkpoints.read_checkpoint(str(t5x))[0], _params("1.1"))

    # Reading the checkpoint directly as another model's CHECKPOINT_PATH: the record tells them apart.
    mesh = partitioning.make_mesh(devices=jax.devices()[:1])
    with pytest.raises(ValueError, match=r"records another model: relative_attention_max_distance=64 \(the model has 128\)"):
        load_for_inference(tiny_t5("1.1"), str(t5x), mesh)

    # An explicit --vocabulary wins and is checked; so is the checkpoint's own.
    (tmp_path / "notes.txt").write_text("not a model")
    for flags, said in (([f"--vocabulary={tmp_path / 'notes.txt'}"], "--vocabulary: "), ([], "the checkpoint's own vocabulary: ")):
        if not flags:
            (step / "spiece.model").write_text("not a model")
        assert convert.main(["--t5x_checkpoint", str(t5x), "--output_dir", str(tmp_path / "wrong"), *flags]) == 2
        assert said + f"{tmp_path / 'notes.txt' if flags else step / 'spiece.model'} is not a SentencePiece model" in capsys.readouterr().err
        assert not (tmp_path / "wrong").exists()

    # As T5X writes it: no record, no vocabulary.
    (step / t5x_checkpoints.MODEL_SETTINGS_FILE).unlink()
    (step / "spiece.model").unlink()
    assumed = imported("assumed")
    said = capsys.readouterr().err
    assert "assumed T5's relative_attention_max_distance=128, layer_norm_epsilon=1e-06" in said and "--t5x_setting" in said
    assert (assumed.relative_attention_max_distance, assumed.layer_norm_epsilon) == (128, 1e-6)
    given = imported("given", "--t5x_setting=relative_attention_max_distance=64", "--t5x_setting=layer_norm_epsilon=1e-5")
    assert all(getattr(given, name) == getattr(config, name) for name in ARCHITECTURE_FIELDS)
    assert "records no model settings" not in capsys.readouterr().err
    assert convert.main(["--t5x_checkpoint", str(t5x), "--output_dir", str(tmp_path / "bad"), "--t5x_setting=dropout_rate=0"]) == 2
    assert "NAME must be one of relative_attention_max_distance, layer_norm_epsilon" in capsys.readouterr().err




def test_our_checkpoints_of_another_relative_position_range_or_epsilon_are_refused(tmp_path):
    """A textchem-convert folder (its t5_config.json) and a run (its config.gin) of a relative-position range of 40
    and an epsilon of 1e-3 have t5_1_1_tiny's shapes: evaluated, inferred from or started from with its 128 and 1e-6
    they ran as that model without a word (first-step loss 31.59 for 31.62), where the same weights as a Hugging Face
    or T5X checkpoint are refused. Runtime-only settings (dtype, remat) a run's config.gin binds are not compared."""
    import gin

    from helpers import tiny_e2clm

    from textchem_jax import checkpoints as ckpt
    from textchem_jax import convert, launch, partitioning
    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.model_loading import check_recorded_architecture, initial_params, load_for_inference

    other = {"relative_attention_max_distance": 40, "layer_norm_epsilon": 1e-3}
    theirs, ours = tiny_t5("1.1", **other), tiny_t5("1.1")
    params, mesh = _params("1.1"), partitioning.make_mesh(devices=jax.devices()[:1])
    converted = str(tmp_path / "converted")
    convert.write_converted(tmp_path / "converted", theirs.t5_config, params, vocabularies.DEFAULT_VOCABULARY_PATH, "")

    def run_of(name: str, model_gin: str, bindings: list[str]):
        """A MODEL_DIR whose config.gin is written as textchem-train writes it (gin's configuration of the files)."""
        launch.parse_gin([model_gin], bindings)
        try:
            launch.write_config(str(tmp_path / name))
        finally:
            gin.clear_config()
        return tmp_path / name

    bindings = [*(f"config.t5_config.{name} = {value!r}" for name, value in other.items()),
                "config.t5_config.dtype = 'bfloat16'", "config.t5_config.remat_policy = 'full'"]  # fmt: skip
    run = run_of("run", "models/t5_1_1_tiny.gin", bindings)
    saving = ckpt.Checkpoints(str(run / "checkpoints"))
    saving.save(3, {"params": params})
    saving.close()
    said = (r"relative_attention_max_distance=40 \(the model has 128\), "
            r"layer_norm_epsilon=0\.001 \(the model has 1e-06\)")  # fmt: skip
    with pytest.raises(ValueError, match=rf"t5_config\.json describes another model: {said}; bind the model it holds: "
                                         rf"--gin_file={converted}/model\.gin"):  # fmt: skip
        load_for_inference(ours, converted, mesh)
    for path in (run, run / "checkpoints", run / "checkpoints" / "3"):  # every folder CHECKPOINT_PATH takes
        with pytest.raises(ValueError, match=rf"^{run}/config\.gin records another model: {said}; bind the model"):
            load_for_inference(ours, str(path), mesh)
    fresh = nn.meta.unbox(ours.init(jax.random.key(0)))
    for path in (converted, str(run)):  # INITIAL_CHECKPOINT_PATH
        with pytest.raises(ValueError, match=rf"another model: {said}; .* is a starting checkpoint of another model"):
            initial_params(ours, path, mesh, fresh)
    # The model they hold loads, whatever dtype or remat it runs with; the run's config.gin is read here as the
    # export reads it (launch.saved_run, through gin).
    for path in (converted, str(run / "checkpoints" / "3")):
        _assert_same(jax.tree_util.tree_map(np.asarray, load_for_inference(theirs, path, mesh)), params)
    assert initial_params(theirs, converted, mesh, fresh)[1] == 0
    exported = dataclasses.replace(theirs.t5_config, dropout_rate=0.1, dtype="bfloat16", remat_policy="full")
    assert launch.saved_run(str(run)).model.t5_config == exported
    # An e2-CLM run's config.gin (e2clm.e2clm_config), held against the model of a resume.
    e2clm_run = run_of("e2clm", "models/e2clm_small.gin",
                       ["e2clm.e2clm_config.size = 'tiny'", "e2clm.e2clm_config.relative_attention_max_distance = 40"])
    (e2clm_run / "checkpoints").mkdir()
    check_recorded_architecture(tiny_e2clm(relative_attention_max_distance=40), str(e2clm_run), "orbax")
    with pytest.raises(ValueError, match=r"records another model: relative_attention_max_distance=40 \(the model has "
                                         r"128\); resume it with its model"):  # fmt: skip
        check_recorded_architecture(tiny_e2clm(), str(e2clm_run), "orbax", lambda: "resume it with its model")


def test_a_t5x_model_dir_brings_the_vocabulary_of_its_latest_step(tmp_path):
    """INITIAL_CHECKPOINT_PATH may name the MODEL_DIR `--t5x_output_dir` wrote (the README's T5X_INIT), whose
    latest step T5X restores: its vocabulary is that step's; without one the error says where it looked."""
    import shutil

    from textchem_jax.data import vocabulary as vocabularies

    for step in (2, 10):  # "checkpoint_2" sorts after "checkpoint_10" as text: the latest is numeric
        (tmp_path / f"checkpoint_{step}").mkdir()
    shutil.copy(vocabularies.DEFAULT_VOCABULARY_PATH, tmp_path / "checkpoint_10" / "spiece.model")
    expected = vocabularies.load_vocabulary(vocabularies.DEFAULT_VOCABULARY_PATH).vocab_size
    for path in (tmp_path, tmp_path / "checkpoint_10"):
        assert vocabularies.checkpoint_vocabulary(str(path)).vocab_size == expected
    (tmp_path / "checkpoint_10" / "spiece.model").unlink()
    looked = f"{tmp_path}/spiece.model and {tmp_path}/checkpoint_10/spiece.model"
    with pytest.raises(FileNotFoundError, match=rf"brings no vocabulary \(looked for {looked}\): name the folder or checkpoint_<step>"):
        vocabularies.checkpoint_vocabulary(str(tmp_path))


def test_exporting_a_t5x_run_says_to_import_it_first(tmp_path, capsys):
    """A T5X run (its config.gin is T5X's) or one of its checkpoint_<step> given as --checkpoint_dir: one line
    naming the import that reads it; our run reader names a config.gin it cannot parse instead of a gin traceback."""
    from textchem_jax import convert, launch

    run = tmp_path / "t5x_run"
    _write_layout(run, "orbax_state", _params(), step=4)
    (run / "config.gin").write_text(
        "from __gin__ import dynamic_registration\nfrom t5x import adafactor\nfrom t5x import models\n"
        "MODEL = @models.EncoderDecoderModel()\nmodels.EncoderDecoderModel.optimizer_def = @adafactor.Adafactor()\n"
    )
    for path in (run, run / "checkpoint_4"):
        assert convert.main(["--checkpoint_dir", str(path), "--hf_output_dir", str(tmp_path / "hf")]) == 2
        said = capsys.readouterr().err
        assert said == (f"textchem-convert: {path} is a T5X run or checkpoint_<step>: import it first with `textchem-convert "
                        f"--t5x_checkpoint={path} --output_dir=OUT`, then give --checkpoint_dir=OUT\n")  # fmt: skip
    assert not (tmp_path / "hf").exists()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.gin").write_text("no_such_configurable.value = 1\n")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'broken' / 'config.gin'} is not a textchem_jax run config \(.*\): give"):
        launch.saved_run(str(tmp_path / "broken"))


def test_reading_an_orbax_t5x_checkpoint_logs_no_missing_metadata_warning(tmp_path, caplog):
    """T5X keeps _CHECKPOINT_METADATA beside state/, where orbax does not look: its warning on every read says
    nothing is wrong, so reading stays quiet."""
    params = _params()
    _write_layout(tmp_path, "orbax_state", params, step=4)
    state = tmp_path / "checkpoint_4" / "state"
    if (state / "_CHECKPOINT_METADATA").exists():  # where T5X writes it
        (state / "_CHECKPOINT_METADATA").rename(tmp_path / "checkpoint_4" / "_CHECKPOINT_METADATA")
    with caplog.at_level("WARNING"):
        read, step = t5x_checkpoints.read_checkpoint(str(tmp_path))
    _assert_same(read, params)
    assert step == 4 and not [r for r in caplog.records if "Metadata file does not exist" in r.getMessage()]
