"""Training behaviour: microbatches, NaN stop, SIGTERM save, initial checkpoints, Adafactor."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from textchem_jax import partitioning
from textchem_jax import train as train_lib
from textchem_jax import trainer as trainer_lib
from textchem_jax.data.seqio_tasks import vocabulary_size
from textchem_jax.models.config import t5_config
from textchem_jax.models.t5 import T5

ROOT = pathlib.Path(__file__).resolve().parents[1]
LENGTHS = {"inputs": 48, "targets": 32}


def tiny_model() -> T5:
    return T5(t5_config("tiny", "1.1", vocab_size=vocabulary_size(), dropout_rate=0.0))


def demo_batch(batch_size: int = 8) -> dict[str, np.ndarray]:
    dataset = train_lib.train_dataset("textchem_demo", LENGTHS, batch_size, seed=3)
    return {k: v.numpy() for k, v in next(iter(dataset)).items()}


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_microbatches_give_the_same_update_as_one_batch(optimizer):
    batch = demo_batch()
    results = []
    for microbatches in (1, 4):
        schedule = trainer_lib.learning_rate_schedule("constant", 1e-3)
        run = trainer_lib.Trainer(tiny_model(), trainer_lib.make_optimizer(optimizer, schedule, clip_norm=1.0),
                                  partitioning.make_mesh(), num_microbatches=microbatches)  # fmt: skip
        state = run.init_state(jax.random.key(0), batch)
        state, metrics = run.train_step(state, run.shard_batch(batch), jax.random.key(1))
        results.append((jax.device_get(state.params), jax.device_get(metrics)))
    (params_one, metrics_one), (params_many, metrics_many) = results
    assert metrics_many["num_tokens"] == metrics_one["num_tokens"]
    np.testing.assert_allclose(metrics_many["loss"], metrics_one["loss"], rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(params_one), jax.tree_util.tree_leaves(params_many)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_schedules():
    rsqrt = trainer_lib.learning_rate_schedule("rsqrt", 1.0, warmup_steps=100)
    assert float(rsqrt(10)) == pytest.approx(0.1) and float(rsqrt(400)) == pytest.approx(0.05)
    warm = trainer_lib.learning_rate_schedule("cosine", 1.0, warmup_steps=10, decay_steps=100)
    assert float(warm(5)) == pytest.approx(0.5) and float(warm(110)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown schedule"):
        trainer_lib.learning_rate_schedule("bogus")


def _train(model_dir, **overrides):
    kwargs = dict(model_dir=str(model_dir), model=tiny_model(), mixture_or_task_name="textchem_demo",
                  task_feature_lengths=LENGTHS, train_steps=4, batch_size=4, learning_rate=1e-3,
                  checkpoint_period=2, log_period=1, eval_batches=0, infer_eval_examples=0)  # fmt: skip
    kwargs.update(overrides)
    return train_lib.train(**kwargs)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    _train(tmp_path, train_steps=2)  # a good checkpoint at step 2
    with pytest.raises(train_lib.TrainingStopped, match="last good checkpoint is step 2"):
        _train(tmp_path, train_steps=40, learning_rate=1e38, checkpoint_period=1)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and steps[-1] >= 2
    from textchem_jax.model_loading import load_for_inference

    for step in steps:  # nothing non-finite was ever saved
        params = load_for_inference(tiny_model(), str(tmp_path / "checkpoints" / str(step)), partitioning.make_mesh())
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(params)), step


def test_initial_checkpoint_is_loaded(tmp_path, capsys):
    _train(tmp_path / "first", train_steps=2)
    from textchem_jax.model_loading import load_for_inference

    mesh = partitioning.make_mesh()
    trained = load_for_inference(tiny_model(), str(tmp_path / "first"), mesh)
    _train(tmp_path / "second", train_steps=2, initial_checkpoint_path=str(tmp_path / "first"), learning_rate=0.0)
    assert "initialized from" in capsys.readouterr().out
    second = load_for_inference(tiny_model(), str(tmp_path / "second"), mesh)
    for a, b in zip(jax.tree_util.tree_leaves(trained), jax.tree_util.tree_leaves(second)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # lr 0: the loaded weights, unchanged


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    command = [sys.executable, "-m", "textchem_jax.train", "--gin_file=experiments/quickstart.gin",
               f"--gin.MODEL_DIR='{tmp_path}'", "--gin.TRAIN_STEPS=100000", "--gin.BATCH_SIZE=4",
               "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 32}", "--gin.train_lib.train.log_period=1"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})  # fmt: skip
    for line in process.stdout:
        if line.startswith("step 3/"):
            break
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output[-3000:]
    assert "preempted: saved step" in output
    saved = [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    assert saved and int(saved[0]) >= 3


def test_finetune_starts_from_a_hugging_face_import(tmp_path):
    transformers = pytest.importorskip("transformers", reason="needs the hf extra")
    from textchem_jax.convert import main as convert_main
    from textchem_jax.model_loading import load_for_inference

    config = transformers.T5Config(
        vocab_size=vocabulary_size(), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0, decoder_start_token_id=0,
    )  # fmt: skip
    transformers.T5ForConditionalGeneration(config).save_pretrained(tmp_path / "hf")
    assert convert_main(["--hf_dir", str(tmp_path / "hf"), "--output_dir", str(tmp_path / "converted")]) == 0
    _train(tmp_path / "run", train_steps=1, initial_checkpoint_path=str(tmp_path / "converted"), learning_rate=0.0)
    mesh = partitioning.make_mesh()
    imported = load_for_inference(tiny_model(), str(tmp_path / "converted"), mesh)
    trained = load_for_inference(tiny_model(), str(tmp_path / "run"), mesh)
    for a, b in zip(jax.tree_util.tree_leaves(imported), jax.tree_util.tree_leaves(trained)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bfloat16_compute_with_float32_parameters():
    batch = demo_batch()
    losses = {}
    for dtype in ("float32", "bfloat16"):
        model = T5(t5_config("tiny", "1.1", vocab_size=vocabulary_size(), dropout_rate=0.0, dtype=dtype))
        run = trainer_lib.Trainer(model, trainer_lib.make_optimizer("adamw", 1e-3), partitioning.make_mesh())
        state = run.init_state(jax.random.key(0), batch)
        state, metrics = run.train_step(state, run.shard_batch(batch), jax.random.key(1))
        assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(state.params)} == {np.dtype("float32")}
        losses[dtype] = float(metrics["loss"])
    assert np.isfinite(losses["bfloat16"])
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.02)
