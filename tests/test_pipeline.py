"""The T5X-style pipeline end to end: train, checkpoint, resume after SIGKILL, evaluate."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import USER_TASKS

from textchem_jax import checkpoints as ckpt

pytestmark = pytest.mark.slow  # every test runs the CLIs in subprocesses

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAST = [
    "--gin_file=experiments/quickstart.gin",
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 48}",
    "--gin.BATCH_SIZE=4",
    "--gin.train_lib.train.log_period=1",
    "--gin.train_lib.train.eval_period=None",
]


def _train(model_dir: pathlib.Path, *flags: str, wait: bool = True, env: dict[str, str] | None = None):
    command = [sys.executable, "-m", "textchem_jax.train", *FAST, f"--gin.MODEL_DIR='{model_dir}'", *flags]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_train_checkpoint_evaluate_end_to_end(tmp_path):
    result = _train(tmp_path, "--gin.TRAIN_STEPS=6", "--gin.infer_eval/run_config.DatasetConfig.num_examples=4",
                    "--gin.train_lib.train.eval_steps=2")  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "step 6/6" in out and "evaluation at step 6" in out and "textchem_demo_text2mol" in out
    assert " lr n/a " not in out and re.search(r" lr \d\.\d\de[-+]\d\d ", out)  # pretrain.gin logs its schedule
    assert "uncached FunctionDataset" not in result.stderr  # library chatter that does not apply to us
    for name in ("config.gin", "model-info.txt", "checkpoints/6", "train"):
        assert (tmp_path / name).exists(), name
    assert "MODEL_DIR = " in (tmp_path / "config.gin").read_text()
    ckpt.verify(tmp_path / "checkpoints" / "6", 6)  # sealed beside the final evaluation, and whole
    assert (tmp_path / "checkpoints" / "6" / ckpt.CHECKSUMS_FILE).exists()
    assert "partition spec" in (tmp_path / "model-info.txt").read_text()
    predictions = tmp_path / "inference_eval" / "textchem_demo_text2mol-000006.jsonl"
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(rows) == 4 and {"prediction", "target"} <= set(rows[0])
    metrics = json.loads((tmp_path / "inference_eval" / "textchem_demo_text2mol-metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["step"] == 6 and 0.0 <= metrics["validity"] <= 1.0

    # textchem-infer on a plain input file with a task name (the prompt is added), beams and scores out.
    molecules = tmp_path / "molecules.txt"
    molecules.write_text("CCO\nc1ccccc1C(=O)O\n")
    quickstart_model = ["--gin.config.t5_config.d_model=128", "--gin.config.t5_config.d_kv=32", "--gin.config.t5_config.d_ff=256"]
    command = [sys.executable, "-m", "textchem_jax.infer", "--gin_file=models/t5_1_1_tiny.gin", "--gin_file=runs/infer.gin",
               *quickstart_model,
               f"--gin.CHECKPOINT_PATH='{tmp_path}'", f"--gin.INFER_OUTPUT_DIR='{tmp_path / 'preds'}'",
               f"--gin.infer_lib.infer.input_file='{molecules}'", "--gin.infer_lib.infer.task='mol2text'",
               "--gin.infer_lib.infer.row_format='textchem'",
               "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "preds" / "textchem_mol2text-molecules.jsonl").read_text().splitlines()]
    assert [r["input"] for r in rows] == ["Caption the following SMILES: CCO", "Caption the following SMILES: c1ccccc1C(=O)O"]
    assert len(rows[0]["beams"]) == 4 and rows[0]["beam_scores"] == sorted(rows[0]["beam_scores"], reverse=True)
    assert "predicting textchem_mol2text: 2/2 examples in " in result.stdout  # its progress line, when done

    # textchem-eval on the same checkpoint writes the t5x layout into EVAL_OUTPUT_DIR.
    command = [sys.executable, "-m", "textchem_jax.evaluate", "--gin_file=models/t5_1_1_tiny.gin", "--gin_file=runs/eval.gin",
               *quickstart_model,
               f"--gin.CHECKPOINT_PATH='{tmp_path}'", f"--gin.EVAL_OUTPUT_DIR='{tmp_path / 'eval'}'",
               "--gin.MIXTURE_OR_TASK_NAME='textchem_demo_paragraph2actions'",
               "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}", "--gin.run_config.DatasetConfig.num_examples=4"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "levenshtein_similarity" in result.stdout
    assert "decoding validation: 4/4 examples in " in result.stdout
    assert (tmp_path / "eval" / "inference_eval" / "textchem_demo_paragraph2actions-000006.jsonl").exists()  # by its step
    assert (tmp_path / "eval" / "config.gin").exists() and (tmp_path / "eval" / "provenance.json").exists()  # as t5x.eval

    # The wrong model configuration for a checkpoint is a clear error, not a crash deep inside orbax.
    command = [c for c in command if c not in quickstart_model]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "config.gin" in result.stderr

    # A run whose vocabulary is not VOCABULARY's, of the same size (a textchem-vocab model has the demo's size by
    # default), is refused: its ids decoded with the bound vocabulary were garbage, with no error.
    other = _reordered_vocabulary(tmp_path / "spiece.model", tmp_path / "other.model")
    own = (tmp_path / "spiece.model").read_bytes()
    command = [*command, *quickstart_model]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TEXTCHEM_VOCABULARY": str(other)})  # fmt: skip
    assert result.returncode == 2 and f"was trained with the vocabulary {tmp_path / 'spiece.model'}" in result.stderr, result.stderr[-3000:]
    assert f"TEXTCHEM_VOCABULARY={tmp_path / 'spiece.model'}" in result.stderr and "Traceback" not in result.stderr
    result = _train(tmp_path, "--gin.TRAIN_STEPS=8", env={"TEXTCHEM_VOCABULARY": str(other)})  # resuming with it
    assert result.returncode == 2 and "or give another MODEL_DIR to start anew" in result.stderr, result.stderr[-3000:]
    assert (tmp_path / "spiece.model").read_bytes() == own  # the run's record of its vocabulary is kept
    assert not (tmp_path / "checkpoints" / "8").exists()


def _reordered_vocabulary(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    """Another vocabulary of `source`'s size: two pieces swapped, so two ids mean each other's piece."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(source.read_bytes())
    first, second = proto.pieces[10], proto.pieces[11]
    first.piece, second.piece = second.piece, first.piece
    target.write_bytes(proto.SerializeToString())
    return target


END_PROCESS = """
import atexit, sys, threading, time
from textchem_jax.launch import end_process
atexit.register(print, "atexit handler ran", flush=True)
threading.Thread(target=lambda: (time.sleep(0.5), print("thread finished"))).start()
print("buffered, unflushed", end="")
end_process(int(sys.argv[1]) if sys.argv[1].isdigit() else sys.argv[1])
"""


@pytest.mark.parametrize(("code", "status"), [("0", 0), ("3", 3), ("no such file", 1)])
def test_commands_end_after_their_threads_atexit_handlers_and_output(code, status):
    """The commands end with `launch.end_process` (os._exit, no native teardown): what Python's own exit does
    first still happens, in its order, and the status is sys.exit's."""
    result = subprocess.run([sys.executable, "-c", END_PROCESS, code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == status
    assert result.stdout == "buffered, unflushedthread finished\natexit handler ran\n"
    assert result.stderr == ("no such file\n" if status == 1 else "")


def test_missing_required_macro_names_file_and_fix(tmp_path):
    command = [sys.executable, "-m", "textchem_jax.train", "--gin_file=experiments/quickstart.gin"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "MODEL_DIR is required" in result.stderr and "runs/pretrain.gin" in result.stderr
    assert "--gin.MODEL_DIR=" in result.stderr


def test_typo_in_binding_is_reported(tmp_path):
    command = [sys.executable, "-m", "textchem_jax.train", "--gin_file=experiments/quickstart.gin",
               f"--gin.MODEL_DIR='{tmp_path}'", "--gin.train_lib.trian.batch_size=3"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "train_lib.trian" in result.stderr and "has no attribute trian" in result.stderr
    assert "In bindings string line 2" in result.stderr  # the user's second binding; no traceback
    assert "Traceback" not in result.stderr
    # a misspelt mixture: seqio's "No Task or Mixture found" came as a traceback through gin
    command = [*command[:-1], "--gin.MIXTURE_OR_TASK_NAME='textchem_dmeo'"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "configuration error: no SeqIO task or mixture is named 'textchem_dmeo': did you mean 'textchem_demo'" in result.stderr
    assert "training textchem_dmeo" not in result.stdout  # the intro said it trained it, first
    assert "Traceback" not in result.stderr and "In call to configurable" not in result.stderr
    # a configurable bound without a value it needs (the README's own OPTIMIZER example form): 67 lines of traceback
    command = [*command[:-1], "--gin.OPTIMIZER=@optax.sgd()"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "configuration error: sgd() (for OPTIMIZER) has no value for learning_rate: bind <module>.sgd.learning_rate" in result.stderr
    assert not any(tmp_path.iterdir())  # said before the run made anything


def test_users_own_task_through_train_eval_infer_and_the_run_exports_to_hugging_face(tmp_path, monkeypatch):
    """Run from the user's own folder with paths relative to it, as people type them (orbax itself
    refuses relative paths: a relative MODEL_DIR trained and then failed to save)."""
    transformers = pytest.importorskip("transformers", reason="the export check needs the hf extra")
    import torch

    (tmp_path / "my_spelling_tasks.py").write_text(USER_TASKS)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    user = ["--gin.MIXTURE_OR_TASK_MODULE='my_spelling_tasks'", "--gin.MIXTURE_OR_TASK_NAME='my_spelling'"]
    run = tmp_path / "run"
    command = [sys.executable, "-m", "textchem_jax.train", *FAST, "--gin.MODEL_DIR='run'", *user, "--gin.TRAIN_STEPS=2",
               "--gin.infer_eval/run_config.DatasetConfig.num_examples=4", "--gin.train_lib.train.eval_steps=1"]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["2"]
    assert "my_spelling" in result.stdout and "exact" in result.stdout

    model = ["--gin.config.t5_config.d_model=128", "--gin.config.t5_config.d_kv=32", "--gin.config.t5_config.d_ff=256"]
    lengths = "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}"
    command = [sys.executable, "-m", "textchem_jax.evaluate", "--gin_file=models/t5_1_1_tiny.gin", "--gin_file=runs/eval.gin",
               *model, *user, lengths, "--gin.CHECKPOINT_PATH='run'", "--gin.EVAL_OUTPUT_DIR='eval'"]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "eval" / "inference_eval" / "my_spelling-000002.jsonl").exists() and "exact" in result.stdout

    command = [sys.executable, "-m", "textchem_jax.infer", "--gin_file=models/t5_1_1_tiny.gin", "--gin_file=runs/infer.gin",
               *model, *user, lengths, "--gin.CHECKPOINT_PATH='run/checkpoints/2'", "--gin.INFER_OUTPUT_DIR='preds'"]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # T5X's infer rows and file name by default, which textchem-score reads back
    predictions = tmp_path / "preds" / "my_spelling-predict.jsonl-00000-of-00001"
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(rows) == 16 and rows[0]["inputs"] == {"inputs_pretokenized": "Spell: benzene", "targets_pretokenized": "benzene"}
    assert isinstance(rows[0]["prediction"], str) and isinstance(rows[0]["aux"]["scores"], float)
    assert (tmp_path / "preds" / "my_spelling-predict.jsonl-00000-of-00001.COMPLETED").exists()

    # The trained run exports to a Hugging Face directory with the same logits, named by the folder that
    # training's last line prints (MODEL_DIR/checkpoints), and to T5X from one step of it.
    from textchem_jax import convert, launch, partitioning
    from textchem_jax.model_loading import load_for_inference

    monkeypatch.chdir(tmp_path)
    assert convert.main(["--checkpoint_dir=run/checkpoints", "--hf_output_dir=hf"]) == 0
    assert convert.main(["--checkpoint_dir=run/checkpoints/2", "--t5x_output_dir=t5x"]) == 0
    assert (tmp_path / "t5x" / "checkpoint_2" / "checkpoint").exists()
    assert (tmp_path / "t5x" / "checkpoint_2" / "spiece.model").read_bytes() == (run / "spiece.model").read_bytes()
    ours = launch.saved_run(str(run)).model
    params = load_for_inference(ours, str(run), partitioning.make_mesh())
    rng = np.random.default_rng(0)
    encoder = rng.integers(2, 500, (2, 9)).astype(np.int32)
    decoder = np.concatenate([np.zeros((2, 1), np.int32), rng.integers(2, 500, (2, 5)).astype(np.int32)], axis=1)
    expected = np.asarray(ours.logits(params, {"encoder_input_tokens": encoder, "decoder_input_tokens": decoder}))
    hf_model = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        hf = hf_model(input_ids=torch.tensor(encoder, dtype=torch.long), decoder_input_ids=torch.tensor(decoder, dtype=torch.long))
    np.testing.assert_allclose(hf.logits.numpy(), expected, atol=1e-4, rtol=1e-4)
    assert (tmp_path / "hf" / "spiece.model").exists()
