"""Sampling in `textchem-infer` and inference evaluation: every batch draws its own key from a seed set in gin
(one fixed key made batches of equal inputs repeat each other); a blank input line is a counted, named skip;
a mesh that cannot split the model, or a NUM_PARTITIONS below 1, is said before any work, in the settings'
own names."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
from helpers import LENGTHS, ROOT, tiny_t5

import tasks  # noqa: F401  (registers the demo tasks)
from textchem_jax import partitioning
from textchem_jax.catalogue import PROMPTS
from textchem_jax.evaluator import InferenceEvaluator
from textchem_jax.models import decoding
from textchem_jax.run_config import DatasetConfig

SAMPLE_TWICE = functools.partial(decoding.temperature_sample, num_decodes=2)


@functools.cache
def _model_and_params():
    model = tiny_t5()
    return model, jax.tree_util.tree_map(np.asarray, nn.meta.unbox(model.init(jax.random.key(7))))


@pytest.fixture()
def checkpoint(tmp_path):
    from textchem_jax.model_loading import write_params

    (tmp_path / "ckpt").mkdir()
    write_params(tmp_path / "ckpt", _model_and_params()[1])
    return tmp_path / "ckpt"


def _sampled(checkpoint, tmp_path, lines: list[str], *, seed: int | None, name: str) -> list[dict]:
    from textchem_jax import infer as infer_lib

    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    (path,) = infer_lib.infer(
        model=_model_and_params()[0], checkpoint_path=str(checkpoint), output_dir=str(tmp_path / name),
        dataset_cfg=DatasetConfig(None, LENGTHS, "test", 4, seed=seed), decode_fn=SAMPLE_TWICE,
        input_file=str(tmp_path / "in.txt"), task="mol2text", row_format="textchem",
    )  # fmt: skip
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


def test_every_batch_samples_afresh_and_a_seed_repeats_a_run(checkpoint, tmp_path):
    """8 equal inputs in batches of 4, 2 samples each: the second batch repeated the first exactly, every run,
    with no seed to change. Now no two of the 16 samples' rows repeat another row; the same seed gives the same
    file, another seed another."""
    rows = _sampled(checkpoint, tmp_path, ["CCO"] * 8, seed=None, name="unseeded")
    beams = [tuple(row["beams"]) for row in rows]
    assert len(beams) == 8 and len(set(beams)) == 8  # neither across batches nor within one do rows repeat
    assert all(len(set(pair)) == 2 for pair in beams)  # an input's two samples differ too
    assert all(row["beam_scores"] == sorted(row["beam_scores"], reverse=True) for row in rows)  # best first
    assert _sampled(checkpoint, tmp_path, ["CCO"] * 8, seed=0, name="seed0") == rows  # None is seed 0
    other = _sampled(checkpoint, tmp_path, ["CCO"] * 8, seed=1, name="seed1")
    assert [tuple(row["beams"]) for row in other] != beams
    assert _sampled(checkpoint, tmp_path, ["CCO"] * 8, seed=1, name="seed1_again") == other
    with pytest.raises(ValueError, match=r"seed=1.5, sampling's seed .* is not a whole number"):
        _sampled(checkpoint, tmp_path, ["CCO"], seed=1.5, name="bad")


def test_blank_input_lines_are_a_counted_named_skip(checkpoint, tmp_path, caplog):
    """7 lines in, 5 predictions out, and nothing said: now the skip is counted and its lines named, and the
    predictions are the other lines' in order."""
    lines = ["CCO", "c1ccccc1", "", "CC(=O)O", "   ", "CCN", "O=C=O"]
    rows = _sampled(checkpoint, tmp_path, lines, seed=0, name="blank")
    assert [row["input"] for row in rows] == [PROMPTS["mol2text"] + line for line in lines if line.strip()]
    assert "in.txt: 2 of 7 lines are blank (line 3, 5); skipped: the 5 predictions follow the other lines" in caplog.text


def test_inference_evaluation_samples_each_batch_afresh_and_repeats_itself(tmp_path):
    """The evaluator's batches (the round trip's included) each draw their own key, numbered from 0 at every
    evaluation: the same seed evaluates alike twice, another seed decodes otherwise; one batch decoded twice in
    an evaluation is not the same draw."""
    model, params = _model_and_params()
    cfg = DatasetConfig("textchem_demo_forward", LENGTHS, "test", 4, shuffle=False, pack=False, num_examples=6, seed=3)

    def predictions(cfg, name):
        evaluator = InferenceEvaluator(model, cfg, str(tmp_path / name), partitioning.make_mesh(), SAMPLE_TWICE)
        evaluator.evaluate(params, step=1)
        return _predictions(tmp_path / name), evaluator

    first, evaluator = predictions(cfg, "first")
    evaluator.evaluate(params, step=1)  # the same evaluator again (as in training): the same draws
    again = _predictions(tmp_path / "first")
    assert again == first and predictions(cfg, "second")[0] == first
    assert predictions(dataclasses.replace(cfg, seed=4), "other")[0] != first
    batch = {"encoder_input_tokens": np.full((4, LENGTHS["inputs"]), 5, np.int32)}
    one, two = (evaluator.decode(params, batch)[0] for _ in range(2))
    assert not np.array_equal(one, two)


def _predictions(output_dir) -> list:
    lines = (output_dir / "textchem_demo_forward-000001.jsonl").read_text().splitlines()
    return [json.loads(line)["prediction"] for line in lines]


def _cli(module: str, devices: int, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", module, *flags]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_the_documented_sampling_flag_samples_alike_on_8_devices_and_bad_meshes_are_said_first(checkpoint, tmp_path):
    """runs/infer.gin's own `--gin.infer_lib.infer.decode_fn=@decoding.temperature_sample` was a configuration
    error; now it runs, and a batch of 4 padded to the 8 devices' data axis draws as on one device. NUM_PARTITIONS=8 for a model with 4 heads failed while reading the checkpoint (infer) or in the
    first step (train, leaving an empty MODEL_DIR); NUM_PARTITIONS=0 blamed a mesh shape nobody set."""
    (tmp_path / "in.txt").write_text("CCO\nc1ccccc1\nCC(=O)O\nCCN\nO=C=O\n")
    infer = ["--gin_file=models/t5_1_1_tiny.gin", "--gin_file=runs/infer.gin", f"--gin.CHECKPOINT_PATH='{checkpoint}'",
             f"--gin.infer_lib.infer.input_file='{tmp_path / 'in.txt'}'", "--gin.infer_lib.infer.task='mol2text'",
             "--gin.infer_lib.infer.row_format='textchem'", "--gin.infer_lib.infer.decode_fn=@decoding.temperature_sample",
             "--gin.decoding.temperature_sample.num_decodes=2", "--gin.BATCH_SIZE=4",
             "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 16}"]  # fmt: skip
    outputs = []
    for devices in (1, 8):
        result = _cli("textchem_jax.infer", devices, *infer, f"--gin.INFER_OUTPUT_DIR='{tmp_path / str(devices)}'")
        assert result.returncode == 0, result.stderr[-3000:]
        outputs.append([json.loads(line) for line in (tmp_path / str(devices) / "textchem_mol2text-in.jsonl").open()])
    one, eight = outputs
    assert len(one) == 5 and [row["beams"] for row in eight] == [row["beams"] for row in one]
    # a score sums at most 16 float32 log-probs, each from a program split another way
    np.testing.assert_allclose([row["beam_scores"] for row in eight], [row["beam_scores"] for row in one],
                               rtol=16 * np.finfo(np.float32).eps)  # fmt: skip

    # The number of beams is bound as runs/infer.gin says (it was ignored: 4 beams, unsaid, without a decode_fn
    # binding too); an output folder that is a file is said so (it was "[Errno 17] File exists").
    beams = [arg for arg in infer if "temperature_sample" not in arg]
    result = _cli("textchem_jax.infer", 1, *beams, "--gin.beam_search.beam_search.num_decodes=3",
                  f"--gin.INFER_OUTPUT_DIR='{tmp_path / 'b3'}'")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert {len(json.loads(line)["beams"]) for line in (tmp_path / "b3" / "textchem_mol2text-in.jsonl").open()} == {3}
    (tmp_path / "a_file").write_text("")
    result = _cli("textchem_jax.infer", 1, *beams, f"--gin.INFER_OUTPUT_DIR='{tmp_path / 'a_file'}'")
    assert result.returncode == 2 and f"{tmp_path / 'a_file'} is a file, not a folder" in result.stderr, result.stderr[-3000:]

    result = _cli("textchem_jax.infer", 8, *infer, f"--gin.INFER_OUTPUT_DIR='{tmp_path / 'p8'}'", "--gin.NUM_PARTITIONS=8")
    assert result.returncode != 0 and not (tmp_path / "p8").exists()
    assert "NUM_PARTITIONS=8 must divide num_heads=4" in result.stderr and "use NUM_PARTITIONS 1, 2 or 4" in result.stderr
    result = _cli("textchem_jax.infer", 8, *infer, f"--gin.INFER_OUTPUT_DIR='{tmp_path / 'p0'}'", "--gin.NUM_PARTITIONS=0")
    assert "NUM_PARTITIONS=0 (num_partitions): give a whole number >= 1" in result.stderr
    assert "mesh_shape" not in result.stderr

    train = ["--gin_file=experiments/quickstart.gin", "--gin.TRAIN_STEPS=1", "--gin.NUM_PARTITIONS=8",
             f"--gin.MODEL_DIR='{tmp_path / 'run'}'"]  # fmt: skip
    result = _cli("textchem_jax.train", 8, *train)
    assert result.returncode != 0 and "NUM_PARTITIONS=8 must divide num_heads=4" in result.stderr
    assert not (tmp_path / "run").exists() and "training textchem_demo" not in result.stdout  # it said it trained, first


def _infer(checkpoint, tmp_path, input_name: str, output: str, **settings) -> list[str]:
    from textchem_jax import infer as infer_lib

    settings = {"dataset_cfg": DatasetConfig(None, LENGTHS, "test", 4), "decode_fn": decoding.greedy,
                "task": "mol2text", **settings}  # fmt: skip
    return infer_lib.infer(model=_model_and_params()[0], checkpoint_path=str(checkpoint),
                           output_dir=str(tmp_path / output), input_file=str(tmp_path / input_name), **settings)  # fmt: skip


def test_another_inputs_predictions_do_not_replace_an_earlier_runs(checkpoint, tmp_path):
    """A second run into the same folder silently replaced the first's predictions (4 rows by 2, and config.gin
    then told of the second input only); rows.jsonl then rows.csv both wrote `<task>-rows.jsonl`. Now another
    input is refused, naming the file and the input it holds; the same input again is a rerun and replaces it."""
    (tmp_path / "a.txt").write_text("CCO\nc1ccccc1\nCC(=O)O\nCCN\n")
    (tmp_path / "b.txt").write_text("O=C=O\nCCCl\n")
    (path,) = _infer(checkpoint, tmp_path, "a.txt", "t5x")
    assert path.endswith("textchem_mol2text-predict.jsonl-00000-of-00001")  # T5X's name, as before
    first = pathlib.Path(path).read_text()
    with pytest.raises(ValueError, match=rf"^{path} holds the predictions of the input file {tmp_path / 'a.txt'} "
                                         r"\(task mol2text\): give another INFER_OUTPUT_DIR, or delete the file"):
        _infer(checkpoint, tmp_path, "b.txt", "t5x")
    assert pathlib.Path(path).read_text() == first and len(first.splitlines()) == 4
    assert _infer(checkpoint, tmp_path, "a.txt", "t5x") == [path]  # a rerun
    assert pathlib.Path(path).read_text() == first

    (tmp_path / "rows.jsonl").write_text('{"input": "CCO"}\n')
    (tmp_path / "rows.csv").write_text("input\nCCN\n")
    (path,) = _infer(checkpoint, tmp_path, "rows.jsonl", "ours", row_format="textchem")
    with pytest.raises(ValueError, match=rf"^{path} holds the predictions of the input file {tmp_path / 'rows.jsonl'}"):
        _infer(checkpoint, tmp_path, "rows.csv", "ours", row_format="textchem")
    assert [json.loads(line)["input"] for line in open(path)] == [PROMPTS["mol2text"] + "CCO"]


def test_a_relative_input_is_the_same_input_only_where_it_is_the_same_file(checkpoint, tmp_path, monkeypatch):
    """The rerun check read the recorded `inputs.txt` against the working directory of the new run: another
    folder's inputs.txt replaced the first's predictions. A folder written before runs recorded their outputs
    refused even an identical rerun."""
    from textchem_jax import infer as infer_lib
    from textchem_jax import provenance

    for folder, text in (("a", "CCO\nCCN\n"), ("b", "O=C=O\n")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "inputs.txt").write_text(text)
    settings = {"model": _model_and_params()[0], "checkpoint_path": str(checkpoint), "output_dir": str(tmp_path / "out"),
                "dataset_cfg": DatasetConfig(None, LENGTHS, "test", 4), "decode_fn": decoding.greedy,
                "task": "mol2text", "input_file": "inputs.txt"}  # fmt: skip
    monkeypatch.chdir(tmp_path / "a")
    (path,) = infer_lib.infer(**settings)
    first = pathlib.Path(path).read_text()
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(ValueError, match=rf"holds the predictions of the input file {tmp_path / 'a' / 'inputs.txt'} "):
        infer_lib.infer(**settings)
    assert pathlib.Path(path).read_text() == first
    history = json.loads((tmp_path / "out" / provenance.FILE).read_text())
    for run in history:  # as a folder of the version before
        run.pop("outputs")
    (tmp_path / "out" / provenance.FILE).write_text(json.dumps(history))
    monkeypatch.chdir(tmp_path / "a")
    assert infer_lib.infer(**settings) == [path]  # the same input again: a rerun
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(ValueError, match=r"holds the predictions of the input file"):
        infer_lib.infer(**settings)


def test_invalid_decoder_options_are_refused_before_the_checkpoint_loads(tmp_path):
    """temperature=-1 was refused (well) only once the checkpoint had loaded, a minute in for a large one; now the
    decoder's own check runs first: here before a checkpoint path that does not exist is even looked at."""
    (tmp_path / "in.txt").write_text("CCO\n")
    for decode_fn, said in ((functools.partial(decoding.temperature_sample, temperature=-1.0), "temperature_sample.temperature=-1.0: give 0"),
                            (functools.partial(decoding.temperature_sample, top_p=0.0), r"top_p=0.0 is a share")):  # fmt: skip
        with pytest.raises(ValueError, match=said):
            _infer(tmp_path / "no_checkpoint", tmp_path, "in.txt", "out", decode_fn=decode_fn)
    assert not (tmp_path / "out").exists()


def test_textchem_eval_refuses_invalid_decoder_options_before_the_checkpoint_loads(checkpoint, tmp_path, monkeypatch):
    """textchem-eval built its evaluator, where the decoder's options are checked, only after the checkpoint had
    loaded: the same minute's wait for a large one as infer had."""
    from textchem_jax import evaluate as evaluate_lib
    from textchem_jax import model_loading

    def loaded(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before the decoder's options were checked")

    monkeypatch.setattr(model_loading, "load_for_inference", loaded)
    with pytest.raises(ValueError, match="temperature_sample.temperature=-1.0: give 0"):
        evaluate_lib.evaluate(model=tiny_t5(), checkpoint_path=str(checkpoint), output_dir=str(tmp_path / "eval"),
                              dataset_cfg=DatasetConfig("textchem_demo_forward", LENGTHS, "validation", 4, pack=False),
                              decode_fn=functools.partial(decoding.temperature_sample, temperature=-1.0))  # fmt: skip


def test_a_textchem_row_says_its_input_was_cut(checkpoint, tmp_path, caplog):
    """An input over the input length was named in one warning, but its row showed the whole text with nothing to
    say the model read it cut. Now its textchem row carries `"input_cut": true` (the others none); T5X's rows are
    T5X's."""
    (tmp_path / "in.txt").write_text("CCO\n" + "C" * 400 + "\nCCN\n")
    (path,) = _infer(checkpoint, tmp_path, "in.txt", "ours", row_format="textchem")
    rows = [json.loads(line) for line in open(path)]
    assert [row.get("input_cut") for row in rows] == [None, True, None] and rows[1]["input"].endswith("C" * 400)
    assert f"in.txt: 1 of 3 inputs are longer than {LENGTHS['inputs']} tokens (line 2)" in caplog.text
    (path,) = _infer(checkpoint, tmp_path, "in.txt", "t5x")
    assert all(set(json.loads(line)) == {"inputs", "prediction", "aux"} for line in open(path))
