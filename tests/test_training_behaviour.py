"""Training behaviour: microbatches, NaN stop, SIGTERM and Ctrl-C save, initial checkpoints, Adafactor."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

from helpers import LENGTHS, ONE_TASK_EVALUATION, ROOT, as_from_a_terminal, demo_batch, t5_like_vocabulary, tiny_t5, tree_leaves
from textchem_jax import partitioning
from textchem_jax.checkpoints import CHECKSUMS_FILE
from textchem_jax import train as train_lib
from textchem_jax import trainer as trainer_lib
from textchem_jax.run_config import CheckpointConfig, DatasetConfig

LEARNING_RATE = 1e-3
OPTIMIZERS = {
    "sgd": lambda lr: optax.sgd(lr),
    "adamw": lambda lr: optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8),
    "adafactor": lambda lr: optax.adafactor(lr),
}


def _close_to_scale(actual, expected, what: str, stored_in=None, relative: float = 1e-4) -> None:
    """Equal up to float32 summation order: |a - b| <= relative * max|b| of each array (+ 2 ulps of the
    values the difference was taken from, `stored_in`, e.g. parameters before and after an update).

    Microbatching only reorders the sums over tokens; that rounding is bounded by the array's scale,
    while a wrong accumulation (a missing slice, a mean instead of a sum) is off by O(1) of it.
    """
    stored = tree_leaves(stored_in) if stored_in is not None else [None] * len(tree_leaves(expected))
    for a, b, values in zip(tree_leaves(actual), tree_leaves(expected), stored):
        if not (np.issubdtype(b.dtype, np.floating) and b.size):
            np.testing.assert_array_equal(a, b, err_msg=what)
            continue
        bound = relative * float(np.max(np.abs(b))) + (0.0 if values is None else 2 * np.spacing(np.abs(values)))
        excess = np.abs(a - b) - bound
        assert np.all(excess <= 0), f"{what}: {int(np.sum(excess > 0))} of {b.size} differ, worst by {np.max(excess):.3g}"


def _optimizer_of_each_leaf(params) -> dict:
    """Labels for `optax.multi_transform`: the parameter leaves dealt in turn to SGD, AdamW and Adafactor."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    return jax.tree_util.tree_unflatten(treedef, [list(OPTIMIZERS)[i % len(OPTIMIZERS)] for i in range(len(leaves))])


@pytest.mark.slow
def test_microbatches_give_the_same_update_as_one_batch():
    """Accumulated microbatch gradients equal one batch's: checked where they are linear in the gradient,
    with SGD, AdamW and Adafactor each updating a third of the parameters (one compiled step per count).

    SGD's update is -lr * g; Adam's and Adafactor's moments are linear in g and g**2. Their parameter
    updates are not compared: Adam's first step is lr * g / (|g| + eps), so the round-off of a
    near-zero gradient moves an update by up to 2 * lr whatever the accumulation.
    """
    model = tiny_t5()
    batch = demo_batch(model)
    optimizers = {name: make(LEARNING_RATE) for name, make in OPTIMIZERS.items()}
    results, hardware_flops = [], []
    for microbatches in (1, 4):
        tx = optax.chain(optax.clip_by_global_norm(1.0), optax.multi_transform(optimizers, _optimizer_of_each_leaf))
        run = trainer_lib.Trainer(model, tx, partitioning.make_mesh(), num_microbatches=microbatches)
        state = run.init_state(jax.random.key(0))
        hardware_flops.append(train_lib._lowered_flops(run, state, batch, jax.random.key(1)))
        before = jax.device_get(state.params)
        state, metrics = run.train_step(state, run.shard_batch(batch), jax.random.key(1))
        update = jax.tree_util.tree_map(np.subtract, jax.device_get(state.params), before)
        results.append((update, jax.device_get(state.opt_state), jax.device_get(metrics), before))
    (update_one, state_one, metrics_one, params), (update_many, state_many, metrics_many, _) = results
    assert metrics_many["num_tokens"] == metrics_one["num_tokens"]
    assert hardware_flops[0] and hardware_flops[1] == hardware_flops[0]  # HFU's count: XLA counted the loop body once
    np.testing.assert_allclose(metrics_many["loss"], metrics_one["loss"], rtol=1e-5)
    np.testing.assert_allclose(metrics_many["grad_norm"], metrics_one["grad_norm"], rtol=1e-5)
    by_sgd = [label == "sgd" for label in tree_leaves(_optimizer_of_each_leaf(params))]
    assert 0 < sum(by_sgd) < len(by_sgd)

    def sgd_only(tree) -> list[np.ndarray]:
        return [leaf for leaf, sgd in zip(tree_leaves(tree), by_sgd) if sgd]

    _close_to_scale(sgd_only(update_many), sgd_only(update_one), "SGD's update (-lr * clipped gradient)",
                    stored_in=sgd_only(params))  # fmt: skip
    inner_one, inner_many = state_one[1].inner_states, state_many[1].inner_states
    for name in ("adamw", "adafactor"):
        assert tree_leaves(inner_one[name]), f"{name} updates no parameter"
        _close_to_scale(inner_many[name], inner_one[name], f"{name}'s moments")


def test_schedules():
    rsqrt = trainer_lib.learning_rate_schedule("rsqrt", 1.0, warmup_steps=100)
    assert float(rsqrt(10)) == pytest.approx(0.1) and float(rsqrt(400)) == pytest.approx(0.05)
    warm = trainer_lib.learning_rate_schedule("cosine", 1.0, warmup_steps=10, decay_steps=100)
    assert float(warm(5)) == pytest.approx(0.5) and float(warm(110)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown schedule"):
        trainer_lib.learning_rate_schedule("bogus")


def _train(model_dir, train_steps: int = 4, learning_rate: float = 1e-3, checkpoint_period: int = 2,
           initial_checkpoint_path: str | None = None, restore_fallback: bool = True, model=None, started=None):  # fmt: skip
    return train_lib.train(
        model=model or tiny_t5(), model_dir=str(model_dir), started=started, optimizer=optax.adamw(learning_rate, weight_decay=0.0), total_steps=train_steps,
        train_dataset_cfg=DatasetConfig("textchem_demo", LENGTHS, "train", batch_size=4),
        checkpoint_cfg=CheckpointConfig(period=checkpoint_period, initial_checkpoint_path=initial_checkpoint_path,
                                         restore_fallback=restore_fallback),
        log_period=1,
    )  # fmt: skip


def test_a_model_dir_that_is_a_file_or_cannot_be_written_is_said_before_training_starts(tmp_path, capsys):
    """A MODEL_DIR that was a file was said after the data pipeline, the model and the "training ..." line (2.5
    minutes on a busy machine); a read-only one ended in "[Errno 30] Read-only file system" with no fix."""
    (tmp_path / "a_file").write_text("")
    for model_dir in (tmp_path / "a_file", tmp_path / "a_file" / "run"):
        with pytest.raises(FileExistsError, match=f"{tmp_path / 'a_file'} is a file, not a folder"):
            _train(model_dir, train_steps=2)
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(read_only)],
                                                   capture_output=True).returncode == 0  # fmt: skip
    try:
        if mounted:  # root writes any folder but a read-only file system's
            with pytest.raises(PermissionError, match=f"{read_only} cannot be written by this user .*: give a folder"):
                _train(read_only / "run", train_steps=2)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(read_only)], check=False)
    assert "training" not in capsys.readouterr().out
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file", "read_only"]


@pytest.mark.slow
def test_a_resume_with_another_relative_position_range_or_epsilon_is_refused(tmp_path):
    """Parameter shapes cannot show a relative-position range or a norm epsilon: a run resumed with another model gin
    trained on as that model without a word, and then wrote its settings into the run's config.gin."""
    import gin

    from textchem_jax import launch

    other = {"relative_attention_max_distance": 40, "layer_norm_epsilon": 1e-3}
    _train(tmp_path, train_steps=2, model=tiny_t5("1.0", **other))
    launch.parse_gin(["models/t5_tiny.gin"], [f"config.t5_config.{name} = {value!r}" for name, value in other.items()])
    try:
        launch.write_config(str(tmp_path))  # as textchem-train writes it
    finally:
        gin.clear_config()
    with pytest.raises(ValueError, match=r"config\.gin records another model: relative_attention_max_distance=40 "
                                         r"\(the model has 128\), layer_norm_epsilon=0\.001 \(the model has 1e-06\); "
                                         "resume it with the model it was trained with"):  # fmt: skip
        _train(tmp_path, train_steps=4, model=tiny_t5("1.0"))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2"]
    _train(tmp_path, train_steps=4, model=tiny_t5("1.0", **other))  # its own model resumes
    assert (tmp_path / "checkpoints" / "4").is_dir()


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    handlers = [signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)]
    _train(tmp_path, train_steps=2)  # a good checkpoint at step 2
    with pytest.raises(train_lib.TrainingStopped, match="last good checkpoint is step 2"):
        _train(tmp_path, train_steps=40, learning_rate=1e38, checkpoint_period=1)
    # train() finished or stopped: Ctrl-C and SIGTERM are the caller's again (a notebook's interrupt works)
    assert [signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)] == handlers
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and steps[-1] >= 2
    from textchem_jax.model_loading import load_for_inference

    for step in steps:  # nothing non-finite was ever saved
        params = load_for_inference(tiny_t5(), str(tmp_path / "checkpoints" / str(step)), partitioning.make_mesh())
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(params)), step


@pytest.mark.slow
def test_a_resume_that_fails_leaves_the_runs_description_as_it_was(tmp_path):
    """textchem-train wrote config.gin before restoring: resuming with another d_model failed, and config.gin (the
    file the error tells the user to go back to) and model-info.txt then described the model that failed."""
    calls = []
    _train(tmp_path, train_steps=2, started=lambda: calls.append(sorted(p.name for p in tmp_path.iterdir())))
    assert len(calls) == 1 and "checkpoints" in calls[0]  # once, after the state is made
    assert (tmp_path / "model-info.txt").exists() and (tmp_path / "spiece.model").exists()
    info = (tmp_path / "model-info.txt").read_text()
    with pytest.raises(ValueError, match=r"is \(64,\) in .* but \(32,\) in this model"):
        _train(tmp_path, train_steps=4, model=tiny_t5(d_model=32), started=lambda: calls.append("again"))
    assert len(calls) == 1 and (tmp_path / "model-info.txt").read_text() == info
    _train(tmp_path, train_steps=2, learning_rate=0.5, started=lambda: calls.append("nothing trained"))
    assert len(calls) == 1  # a finished run run again with other settings rewrote config.gin with them
    # The run's checkpoints/ folder as MODEL_DIR (CHECKPOINT_PATH takes it) started a fresh run inside it.
    with pytest.raises(ValueError, match=f"is a run's checkpoints folder: give the run's own folder \\({tmp_path}\\)"):
        _train(tmp_path / "checkpoints", train_steps=4)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2"]


@pytest.mark.slow
def test_a_finished_run_run_again_does_not_evaluate_again_unless_its_evaluation_was_cut(tmp_path, capsys):
    """Rerunning a finished run decoded and scored its final evaluation once more, each time."""
    infer_cfg = DatasetConfig("textchem_demo_forward", LENGTHS, "validation", 4, shuffle=False, pack=False, num_examples=2)
    run = functools.partial(train_lib.train, model=tiny_t5(), model_dir=str(tmp_path), optimizer=optax.adamw(1e-3),
                            total_steps=2, train_dataset_cfg=DatasetConfig("textchem_demo", LENGTHS, "train", batch_size=4),
                            infer_eval_dataset_cfg=infer_cfg, checkpoint_cfg=CheckpointConfig(period=2))  # fmt: skip
    first = run()["textchem_demo_forward"]
    rows = (tmp_path / "inference_eval" / "textchem_demo_forward-metrics.jsonl").read_text()
    capsys.readouterr()
    assert run() == {"textchem_demo_forward": first}  # the same metrics, read back
    assert "not repeated" in capsys.readouterr().out
    assert (tmp_path / "inference_eval" / "textchem_demo_forward-metrics.jsonl").read_text() == rows
    (tmp_path / "inference_eval" / "textchem_demo_forward-metrics.jsonl").write_text("")  # cut before it was written
    assert run()["textchem_demo_forward"] == pytest.approx(first) and "not repeated" not in capsys.readouterr().out


@pytest.mark.slow
def test_a_finished_run_without_inference_evaluation_is_not_evaluated_again(tmp_path, capsys):
    """Its teacher-forced evaluation ran again at the same step on each rerun, a duplicate point in TensorBoard."""
    from textchem_jax import run_results

    run = functools.partial(train_lib.train, model=tiny_t5(), model_dir=str(tmp_path), optimizer=optax.adamw(1e-3),
                            total_steps=2, train_dataset_cfg=DatasetConfig("textchem_demo", LENGTHS, "train", batch_size=4),
                            train_eval_dataset_cfg=DatasetConfig("textchem_demo", LENGTHS, "validation", batch_size=4),
                            eval_steps=1, checkpoint_cfg=CheckpointConfig(period=2))  # fmt: skip
    first = run()["teacher_forced"]
    events = sorted(p.relative_to(tmp_path) for p in tmp_path.glob("*train*/**/*tfevents*"))
    capsys.readouterr()
    assert run()["teacher_forced"] == pytest.approx(first) and "not repeated" in capsys.readouterr().out
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.glob("*train*/**/*tfevents*")) == events  # none again
    # T5X's layout: teacher-forced scalars under training_eval/<mixture>/ with the train tags, none in train/
    held_out = run_results.scalars(str(tmp_path / "training_eval" / "textchem_demo"))
    assert held_out["loss"] == [(2, pytest.approx(first["loss"]))] and set(held_out) == set(first)
    assert not any(tag.startswith("eval/") for tag in run_results.scalars(str(tmp_path / "train")))
    # As T5X, each task of the mixture is evaluated too, into its own folder: only the mixture's was written, so no
    # task's held-out loss could be set beside a T5X run's.
    tasks = ["textchem_demo_forward", "textchem_demo_mol2text", "textchem_demo_paragraph2actions", "textchem_demo_retro",
             "textchem_demo_text2mol"]  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "training_eval").iterdir()) == sorted([*tasks, "textchem_demo"])
    per_task = {task: run_results.scalars(str(tmp_path / "training_eval" / task)) for task in tasks}
    assert all(set(held) == set(first) and [step for step, _ in held["loss"]] == [2] for held in per_task.values())
    assert len({held["loss"][0][1] for held in per_task.values()}) == len(tasks)  # each on its own task's data

    # A teacher-forced split that is missing (said, and skipped, at each evaluation) left nothing to find: each
    # rerun decoded and scored the inference evaluation again.
    from textchem_jax.data import datasets

    infer_cfg = DatasetConfig("textchem_demo_forward", LENGTHS, "validation", 4, shuffle=False, pack=False, num_examples=2)
    datasets.set_data_dir(str(tmp_path / "no_data"))
    try:
        run = functools.partial(run, model_dir=str(tmp_path / "missing"), infer_eval_dataset_cfg=infer_cfg,
                                train_eval_dataset_cfg=DatasetConfig("textchem_forward", LENGTHS, "validation", batch_size=4))  # fmt: skip
        first = run()["textchem_demo_forward"]
        capsys.readouterr()
        assert run() == {"textchem_demo_forward": first} and "not repeated" in capsys.readouterr().out
    finally:
        datasets.set_data_dir(None)


@pytest.mark.slow
def test_a_second_trainer_of_one_model_dir_is_refused(tmp_path, capsys):
    """Two textchem-train on one MODEL_DIR trained at once: checkpoints overwritten by the other's steps, config.gin
    and summaries of both settings mixed, or a save failed with advice to free disk space."""
    _train(tmp_path, train_steps=2)
    capsys.readouterr()
    with train_lib._only_trainer(str(tmp_path)):  # the first still training (flock: per open file, one process too)
        with pytest.raises(ValueError, match=rf"{tmp_path} is being trained by textchem-train \(pid {os.getpid()} on "):
            _train(tmp_path, train_steps=4)
    assert "training textchem_demo" not in capsys.readouterr().out  # refused before the data and the model are built
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2"]
    _train(tmp_path, train_steps=4)  # once it ends, the run goes on (and no lock file is left behind)
    assert "4" in {p.name for p in (tmp_path / "checkpoints").iterdir()}


def test_time_spent_evaluating_is_not_step_time(tmp_path, monkeypatch, capsys):
    """The first line after an in-training evaluation read 7,439 ms/step and MFU 0.8% for ~300 ms and 19%: a false
    dip in the throughput and MFU plots, and a jump in the ETA."""
    import types

    from textchem_jax import run_results

    clock = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(train_lib, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    progress = train_lib._Progress(str(tmp_path), total_steps=40, first_step=0)
    for step in (10, 20, 30):  # 1 s a step; 100 s evaluating after step 20
        clock.now += 10.0
        if step == 30:
            clock.now += 100.0
            progress.leave_out(100.0)
        progress.log(step, {"loss": 1.0, "accuracy": 0.5}, tokens=100.0, model_flops=1e9, hardware_flops=2e9, peak=1e10)
    progress.writer.close()
    scalars = run_results.scalars(str(tmp_path / "train"))
    assert [value for _, value in scalars["timing/steps_per_second"]] == pytest.approx([1.0, 1.0, 1.0])
    assert [value for _, value in scalars["timing/mfu"]] == pytest.approx([0.1, 0.1, 0.1])
    assert capsys.readouterr().out.splitlines()[-1].startswith("step 30/40 (75%) loss 1.0000 accuracy 0.500 lr n/a 100 tokens/s 1000 ms/step ETA 10 s MFU 10.0%")


@pytest.mark.slow
def test_logged_train_metrics_are_the_intervals_and_a_resumed_run_logs_the_same(tmp_path):
    """One step's values were logged as the interval's: with log_period 2, step 4 showed step 4's batch alone, and
    the sweep's tokens seen (2,192 where 2,219 were trained) and final train loss came from 1 batch in 10. Each
    point is now the interval's (per-token means weighted by tokens, counts summed), the first step's line does not
    end one, and a run resumed in the middle of an interval (its checkpoint at step 3) logs what the uninterrupted
    run logs, tokens seen included."""
    import tensorflow as tf

    from textchem_jax import run_results

    schedule = optax.linear_schedule(1e-3, 0.0, 5)  # a rate that changes within an interval: its mean is logged

    def run(model_dir, log_period: int) -> dict:
        train_lib.train(model=tiny_t5(), model_dir=str(model_dir), optimizer=optax.adamw(schedule, weight_decay=0.0),
                        trainer_cls=functools.partial(trainer_lib.Trainer, learning_rate_fn=schedule), total_steps=5,
                        train_dataset_cfg=DatasetConfig("textchem_demo", LENGTHS, "train", batch_size=4),
                        checkpoint_cfg=CheckpointConfig(period=3), log_period=log_period)  # fmt: skip
        return {tag: dict(points) for tag, points in run_results.scalars(str(model_dir / "train")).items()}

    each = run(tmp_path / "each", log_period=1)
    whole = run(tmp_path / "whole", log_period=2)
    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "5")  # as if stopped after the save of step 3
    shutil.rmtree(tmp_path / "resumed" / "train")
    resumed = run(tmp_path / "resumed", log_period=2)

    tokens, counts = each["num_tokens"], each["timing/tokens_per_step"]
    for steps, last in (((1, 2), 2), ((3, 4), 4), ((5,), 5)):
        assert whole["num_tokens"][last] == sum(tokens[s] for s in steps)
        assert whole["timing/tokens_per_step"][last] == sum(counts[s] for s in steps) / len(steps)
        for tag in ("loss", "accuracy", "cross_entropy"):  # float32 sums: exact to about 1e-7 of their size
            mean = sum(each[tag][s] * tokens[s] for s in steps) / sum(tokens[s] for s in steps)
            assert whole[tag][last] == pytest.approx(mean, rel=1e-5), (tag, last)
        for tag in ("learning_rate", "grad_norm"):
            mean = sum(each[tag][s] for s in steps) / len(steps)
            assert whole[tag][last] == pytest.approx(mean, rel=1e-5), (tag, last)
    assert sorted(resumed["loss"]) == [4, 5]
    for tag in ("loss", "accuracy", "num_tokens", "timing/tokens_per_step", "learning_rate", "grad_norm"):
        for step in (4, 5):  # the same program on the same state and batches: equal up to float32 rounding
            assert resumed[tag][step] == pytest.approx(whole[tag][step], rel=1e-6), (tag, step)
    seen = [sum(counts[s] for s in range(1, step + 1)) for step in range(1, 6)]
    assert [each["tokens_seen"][step] for step in range(1, 6)] == seen
    assert (whole["tokens_seen"], resumed["tokens_seen"]) == ({1: seen[0], 2: seen[1], 4: seen[3], 5: seen[4]},
                                                              {4: seen[3], 5: seen[4]})  # fmt: skip
    counted = [run_results.tokens_seen(run_results.scalars(str(tmp_path / name / "train")))
               for name in ("each", "whole")]
    assert counted == [seen[4], seen[4]] and whole["tokens_seen/int64"] == whole["tokens_seen"]
    # TensorBoard's fast loader plots float32 scalars only: an int64 `tokens_seen` was missing from its dashboard
    events = [e for f in (tmp_path / "whole" / "train").iterdir() for e in tf.compat.v1.train.summary_iterator(str(f))]
    dtypes = {v.tag: v.tensor.dtype for e in events for v in e.summary.value}
    assert dtypes["tokens_seen"] == tf.float32.as_datatype_enum and dtypes["loss"] == tf.float32.as_datatype_enum


def test_tokens_seen_reads_the_runs_count_and_says_when_it_estimates(caplog):
    """Runs logged before the exact count are estimated from each interval's tokens per step, with a warning."""
    from textchem_jax import run_results

    estimated = {"timing/tokens_per_step": [(2, 100.0), (4, 50.0)]}
    with caplog.at_level(logging.WARNING, logger="textchem_jax.run_results"):
        assert run_results.tokens_seen(estimated) == 300
    assert "tokens seen estimated from timing/tokens_per_step at 2 logged steps" in caplog.text
    caplog.clear()
    shown = {**estimated, "tokens_seen": [(2, 210.0), (4, 2.0**40)]}  # float32, as TensorBoard plots it
    assert run_results.tokens_seen(shown) == 2**40 and not caplog.text
    counted = {**shown, "tokens_seen/int64": [(2, 210), (4, 2**40 + 3)]}  # exact past float32's 2**24
    assert run_results.tokens_seen(counted) == 2**40 + 3 and not caplog.text
    assert run_results.tokens_seen({}) is None


@pytest.mark.slow
def test_initial_checkpoint_is_loaded(tmp_path, capsys):
    _train(tmp_path / "first", train_steps=2)
    from textchem_jax.model_loading import load_for_inference

    mesh = partitioning.make_mesh()
    trained = load_for_inference(tiny_t5(), str(tmp_path / "first"), mesh)
    capsys.readouterr()  # the first run's lines
    _train(tmp_path / "second", train_steps=4, initial_checkpoint_path=str(tmp_path / "first"), learning_rate=0.0)
    out = capsys.readouterr().out
    # the first line comes before the data pipeline and the model are built: what is trained, where
    assert out.splitlines()[0] == (f"training textchem_demo to step 4 (batch 4, inputs {LENGTHS['inputs']}, targets "
                                   f"{LENGTHS['targets']} tokens; mesh data 1 x model 1) in {tmp_path / 'second'}")  # fmt: skip
    assert "initialized from" in out and "(step 2)" in out
    # T5X semantics: TRAIN_STEPS is absolute, so the run continues from the initial checkpoint's step 2.
    assert "step 3/4" in out and "step 1/4" not in out
    assert " lr n/a " in out and "nan" not in out  # no learning_rate_fn: the rate is unknown, not "nan"
    lines = [line for line in out.splitlines() if line.startswith("step ")]
    assert " ms/step (compilation included) ETA at the next line" in lines[0]  # that step compiled
    assert " ms/step ETA 0 s" in lines[-1] and lines[-1].startswith("step 4/4")  # timed from after it
    assert sorted(p.name for p in (tmp_path / "second" / "checkpoints").iterdir() if p.name.isdigit()) == ["4"]
    second = load_for_inference(tiny_t5(), str(tmp_path / "second"), mesh)
    for a, b in zip(jax.tree_util.tree_leaves(trained), jax.tree_util.tree_leaves(second)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # lr 0: the loaded weights, unchanged
    # A resume reads its own checkpoints: another starting checkpoint was ignored without a word, and config.gin
    # (textchem-train's record of the run, as written here) was rewritten with the path that was never read.
    recorded = (f"INITIAL_CHECKPOINT_PATH = '{tmp_path / 'first'}'\n"
                "run_config.CheckpointConfig.initial_checkpoint_path = %INITIAL_CHECKPOINT_PATH\n")  # fmt: skip
    (tmp_path / "second" / "config.gin").write_text(recorded)
    for other in (str(tmp_path / "elsewhere"), None):
        with pytest.raises(ValueError, match=rf"resumes from its own checkpoints, so INITIAL_CHECKPOINT_PATH={other!r} "
                                             rf"would not be read: the run started from '{tmp_path / 'first'}'"):  # fmt: skip
            _train(tmp_path / "second", train_steps=5, initial_checkpoint_path=other)
    assert (tmp_path / "second" / "config.gin").read_text() == recorded
    capsys.readouterr()
    _train(tmp_path / "second", train_steps=5, initial_checkpoint_path=f"{tmp_path / 'first'}/")  # its own: resumes
    assert "resumed from step 4" in capsys.readouterr().out
    # Another model started from it: the fix was the one for resuming ("its MODEL_DIR/config.gin"), and the run
    # left an empty MODEL_DIR/checkpoints/ behind.
    with pytest.raises(ValueError, match=r"\['wi'\].* is not in the checkpoint .*is a starting checkpoint of another model"):
        _train(tmp_path / "third", train_steps=4, initial_checkpoint_path=str(tmp_path / "first"), model=tiny_t5("1.0"))
    assert not (tmp_path / "third").exists()
    # TRAIN_STEPS not past the starting step: it evaluated "step 2" with an empty checkpoints/ (no such checkpoint)
    with pytest.raises(ValueError, match=r"TRAIN_STEPS=2 does not go past step 2 of INITIAL_CHECKPOINT_PATH .*give "
                                         r"--gin.TRAIN_STEPS=4 to train 2 more"):  # fmt: skip
        _train(tmp_path / "fourth", train_steps=2, initial_checkpoint_path=str(tmp_path / "first"))
    assert not (tmp_path / "fourth").exists()


def test_a_summary_that_cannot_be_written_stops_the_run_saying_which_checkpoint_is_kept(tmp_path, monkeypatch):
    """A bucket gone while the run wrote its TensorBoard summaries ended the command in TensorFlow's op error,
    "{{function_node __wrapped__FlushSummaryWriter_device_/job:localhost/...}} ... [Op:FlushSummaryWriter] name:",
    with no word of the checkpoint kept or of what to do (probe: the GCS emulator killed mid-run)."""
    import tensorflow as tf

    log = train_lib._Progress.log
    reason = ("All 2 retry attempts failed. The last failure: Error executing an HTTP request: libcurl code 52 meaning "
              "'Server returned nothing (no headers, no data)', error details: Empty reply from server\n\t when "
              "reading gs://bucket/run/train/events.out.tfevents")  # fmt: skip

    def lost_at_step_3(self, step, *args, **kwargs):
        if step == 3:
            raise tf.errors.UnavailableError(None, None, "{{function_node __wrapped__FlushSummaryWriter_device_/job:"
                                             f"localhost/replica:0/task:0/device:CPU:0}}}} {reason} [Op:FlushSummaryWriter] name: ")  # fmt: skip
        return log(self, step, *args, **kwargs)

    monkeypatch.setattr(train_lib._Progress, "log", lost_at_step_3)
    with pytest.raises(train_lib.TrainingStopped) as stopped:
        _train(tmp_path, train_steps=4, checkpoint_period=2)
    said = str(stopped.value)
    assert said.startswith(" ".join(reason.split()) + ": Cloud Storage could not be reached"), said
    assert said.endswith(f"Step 2 in {tmp_path / 'checkpoints'} is the last checkpoint; fix that (free space, wait "
                         "for the bucket) and rerun the same command to resume")  # fmt: skip
    assert "function_node" not in said and "[Op:" not in said


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_sigterm_or_ctrl_c_saves_and_exits_cleanly(tmp_path, stop):
    """A preemption (SIGTERM) or a first Ctrl-C saves after the step and exits; Ctrl-C ended in a KeyboardInterrupt
    traceback, losing everything since the last checkpoint. Ctrl-C exits as interrupted (130)."""
    command = [sys.executable, "-m", "textchem_jax.train", "--gin_file=experiments/quickstart.gin",
               f"--gin.MODEL_DIR='{tmp_path}'", "--gin.TRAIN_STEPS=100000", "--gin.BATCH_SIZE=4",
               "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 32}", "--gin.train_lib.train.log_period=1"]  # fmt: skip
    process = subprocess.Popen(as_from_a_terminal(command), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})  # fmt: skip
    for line in process.stdout:
        if line.startswith("step 3/"):
            break
    process.send_signal(stop)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == (0 if stop == signal.SIGTERM else 130), output[-3000:]
    assert ("preempted: saved step" if stop == signal.SIGTERM else "interrupted: saved step") in output
    assert "Traceback" not in output
    saved = [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    assert saved and int(saved[0]) >= 3


def test_sigterm_once_the_last_step_is_saved_ends_the_final_evaluation_at_once():
    """The warning said "saving a checkpoint after this step, then exiting" and the whole final evaluation ran on,
    longer than a preemption's grace period. Also when the SIGTERM came while the last step was being saved."""
    handler = signal.getsignal(signal.SIGTERM)
    with train_lib._Preemption() as preemption:
        preemption.stepping = False
        preemption.evaluating()
        with pytest.raises(SystemExit) as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)  # the evaluation; the handler raises before this ends
        assert stop.value.code == 143 and isinstance(stop.value, train_lib._Preemption.EvaluationCut)
    with train_lib._Preemption() as preemption:
        os.kill(os.getpid(), signal.SIGTERM)  # during the last step's save: saved, then
        time.sleep(0.1)
        preemption.stepping = False
        with pytest.raises(train_lib._Preemption.EvaluationCut):
            preemption.evaluating()  # no evaluation started
    assert signal.getsignal(signal.SIGTERM) == handler
    assert train_lib._Preemption._silent not in logging.getLogger("absl").filters


def test_a_sigterm_that_lands_in_a_finalizer_still_ends_the_final_evaluation(capfd):
    """CI saw the cut raised inside a tf.data iterator's `__del__`: Python printed it as "Exception ignored", dropped
    it, and the final evaluation ran to the end and exited 0."""

    class Iterator:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler runs here, inside the finalizer

    hook = sys.unraisablehook
    with train_lib._Preemption() as preemption:
        preemption.stepping = False
        preemption.evaluating()
        with pytest.raises(train_lib._Preemption.EvaluationCut):
            Iterator()  # collected at once: its finalizer runs and the cut is dropped
            assert preemption.cut
            time.sleep(60)  # the rest of the evaluation; the cut is sent again
    assert sys.unraisablehook is hook
    assert "Exception ignored" not in capfd.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("sent, status, said", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_a_signal_during_the_final_evaluation_says_the_step_is_saved_writes_no_metrics_and_a_rerun_evaluates(
        tmp_path, sent, status, said):  # fmt: skip
    """SIGTERM ends the final evaluation at once (it outlasts a preemption's grace period), Ctrl-C too. Ctrl-C said
    "interrupted at once: the steps since the last checkpoint are not saved"; the metric threads then wrote every
    task's line at exit (retrosynthesis's roundtrip_accuracy null, its forward predictor gone), a rerun took the step
    as evaluated, and each seqio.Evaluator printed "Exception ignored ... cannot join current thread"."""
    import json

    command = [sys.executable, "-m", "textchem_jax.train", "--gin_file=experiments/quickstart.gin",
               f"--gin.MODEL_DIR='{tmp_path}'", "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=4",
               "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 32}", "--gin.run_config.CheckpointConfig.period=2",
               "--gin.infer_eval/run_config.DatasetConfig.num_examples=2", "--gin.train_lib.train.eval_steps=1",
               *ONE_TASK_EVALUATION]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(as_from_a_terminal(command), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)  # fmt: skip
    deadline = time.monotonic() + 300
    while not (tmp_path / "checkpoints" / "2").is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # orbax names the folder `2` once the step is committed: the final evaluation begins
    process.send_signal(sent)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == status, output[-3000:]
    assert (f"{said} during the final evaluation: step 2 is saved in {tmp_path / 'checkpoints'}; the evaluation is "
            "skipped, rerun the same command to evaluate") in output  # fmt: skip
    assert not any(line in output for line in ("Traceback", "Exception ignored", "not saved", "saving a checkpoint",
                                                "evaluation at step", "Failed to load task"))  # fmt: skip
    written = [json.loads(line)["step"] for path in (tmp_path / "inference_eval").glob("*-metrics.jsonl")
               for line in path.read_text().splitlines()]  # fmt: skip
    assert 2 not in written
    assert (tmp_path / "checkpoints" / "2" / CHECKSUMS_FILE).is_file()  # sealed as the evaluation ran: never after
    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "nothing to train" in rerun.stdout and "evaluation at step 2" in rerun.stdout and "not repeated" not in rerun.stdout


@pytest.mark.slow
def test_ctrl_c_while_the_last_step_is_saved_skips_the_final_evaluation(tmp_path, monkeypatch, capsys):
    """A Ctrl-C that came while the last step was saved said "saving a checkpoint after this step, then exiting", then
    ran the whole final evaluation and exited 0 (SIGTERM there exits 143 at once). Now the step is saved, one line
    says so, and the run ends as interrupted; a rerun evaluates."""
    from textchem_jax import checkpoints as ckpt

    save = ckpt.Checkpoints.save

    def save_at_ctrl_c(self, step, *args, **kwargs):
        if step == 2:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C as the last step is handed to orbax
        return save(self, step, *args, **kwargs)

    monkeypatch.setattr(ckpt.Checkpoints, "save", save_at_ctrl_c)
    infer_cfg = DatasetConfig("textchem_demo_forward", LENGTHS, "validation", 4, shuffle=False, pack=False,
                              num_examples=2)  # fmt: skip
    run = functools.partial(train_lib.train, model=tiny_t5(), model_dir=str(tmp_path), optimizer=optax.adamw(1e-3),
                            total_steps=2, train_dataset_cfg=DatasetConfig("textchem_demo", LENGTHS, "train", 4),
                            infer_eval_dataset_cfg=infer_cfg, checkpoint_cfg=CheckpointConfig(period=2))  # fmt: skip
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as a console's: the run takes it over
    try:
        with pytest.raises(train_lib.SavedAndInterrupted):
            run()
    finally:
        signal.signal(signal.SIGINT, previous)
    output = capsys.readouterr()
    assert (f"Ctrl-C during the final evaluation: step 2 is saved in {tmp_path / 'checkpoints'}; the evaluation is "
            "skipped, rerun the same command to evaluate") in output.err  # fmt: skip
    assert "evaluation at step" not in output.out and not list(tmp_path.glob("inference_eval/*-metrics.jsonl"))
    assert (tmp_path / "checkpoints" / "2").is_dir()
    monkeypatch.undo()
    assert "textchem_demo_forward" in run() and "evaluation at step 2" in capsys.readouterr().out


@pytest.mark.needs_hf
def test_finetune_starts_from_a_hugging_face_import(tmp_path):
    transformers = pytest.importorskip("transformers", reason="needs the hf extra")
    from textchem_jax.convert import main as convert_main
    from textchem_jax.model_loading import load_for_inference

    config = transformers.T5Config(
        vocab_size=tiny_t5().config.vocab_size, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0, decoder_start_token_id=0,
    )  # fmt: skip
    transformers.T5ForConditionalGeneration(config).save_pretrained(tmp_path / "hf")
    assert convert_main(["--hf_dir", str(tmp_path / "hf"), "--output_dir", str(tmp_path / "converted")]) == 0
    _train(tmp_path / "run", train_steps=1, initial_checkpoint_path=str(tmp_path / "converted"), learning_rate=0.0)
    mesh = partitioning.make_mesh()
    imported = load_for_inference(tiny_t5(), str(tmp_path / "converted"), mesh)
    trained = load_for_inference(tiny_t5(), str(tmp_path / "run"), mesh)
    for a, b in zip(jax.tree_util.tree_leaves(imported), jax.tree_util.tree_leaves(trained)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bfloat16_compute_with_float32_parameters():
    batch = demo_batch(tiny_t5())
    losses = {}
    for dtype in ("float32", "bfloat16"):
        model = tiny_t5(dtype=dtype)
        run = trainer_lib.Trainer(model, optax.adamw(1e-3), partitioning.make_mesh())
        state = run.init_state(jax.random.key(0))
        state, metrics = run.train_step(state, run.shard_batch(batch), jax.random.key(1))
        assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(state.params)} == {np.dtype("float32")}
        losses[dtype] = float(metrics["loss"])
    assert np.isfinite(losses["bfloat16"])
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.02)


@pytest.mark.slow
@pytest.mark.needs_hf
def test_finetune_from_a_converted_checkpoint_uses_its_own_vocabulary(tmp_path):
    """A T5-like 32,100-id vocabulary built here, a random HF T5 over it, converted: textchem-train fine-tunes
    from it with that vocabulary and no environment variable; a mismatched embedding is one clear error."""
    transformers = pytest.importorskip("transformers", reason="needs the hf extra")
    from textchem_jax.convert import main as convert_main
    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.models.adapters import EncoderDecoderModel
    from textchem_jax.models.config import t5_config
    from textchem_jax.run_config import import_task_module

    spiece = t5_like_vocabulary(tmp_path / "t5_like")
    vocab = vocabularies.load_vocabulary(spiece)
    rows = vocabularies.padded_vocab_size(vocab)
    assert (vocab.vocab_size, rows) == (32100, 32128)  # T5's 32,000 pieces + 100 sentinels, 32,128 rows
    config = transformers.T5Config(vocab_size=rows, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                                   dropout_rate=0.0, decoder_start_token_id=0)  # fmt: skip
    transformers.T5ForConditionalGeneration(config).save_pretrained(tmp_path / "hf")
    shutil.copyfile(spiece, tmp_path / "hf" / "spiece.model")
    converted, run = tmp_path / "converted", tmp_path / "run"
    assert convert_main(["--hf_dir", str(tmp_path / "hf"), "--output_dir", str(converted)]) == 0

    command = [sys.executable, "-m", "textchem_jax.train", f"--gin_file={converted / 'model.gin'}",
               "--gin_file=runs/finetune.gin", f"--gin.MODEL_DIR='{run}'", f"--gin.INITIAL_CHECKPOINT_PATH='{converted}'",
               "--gin.MIXTURE_OR_TASK_NAME='textchem_demo'", "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 32}",
               "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=4", "--gin.train_lib.train.eval_period=None",
               "--gin.train_lib.train.eval_steps=0", "--gin.infer_eval/run_config.DatasetConfig.num_examples=0"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "TEXTCHEM_VOCABULARY"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "initialized from" in result.stdout and "step 2/2" in result.stdout
    assert (run / "spiece.model").read_bytes() == pathlib.Path(spiece).read_bytes()  # the run brings its vocabulary
    assert "VOCABULARY" in (run / "config.gin").read_text()

    wrong = EncoderDecoderModel(t5_config("tiny", "1.1", vocab_size=512), vocabulary=vocab)
    with pytest.raises(ValueError, match=r"32,100 pieces \(32,100 to 32,128 embedding rows\) but the model's embedding has 512 rows"):
        import_task_module(None, wrong)


def test_an_evaluation_split_missing_for_teacher_forcing_still_runs_the_inference_evaluation(tmp_path, caplog):
    """A task's validation file missing made the in-training evaluation return after its teacher-forced warning:
    the inference evaluation of every other task was skipped, and nothing said so."""
    import types

    from textchem_jax.data import datasets

    class Evaluated:
        examples = {"textchem_demo_forward": 3}

        def evaluate(self, params, step):
            return {"textchem_demo_forward": {"accuracy": 0.5}}

    def missing():
        raise FileNotFoundError("uspto50k split 'validation' not found")

    trainer = types.SimpleNamespace(model=tiny_t5(), mesh=partitioning.make_mesh())
    state = types.SimpleNamespace(params=None)
    datasets.set_data_dir(str(tmp_path))  # no chebi20/validation.txt there
    try:
        with caplog.at_level("WARNING"):
            teacher_forced = train_lib._teacher_forced_datasets(
                trainer, DatasetConfig("textchem_text2mol", LENGTHS, "validation", 2), 1, 0)
            results = train_lib._evaluate(trainer, state, 4, None, teacher_forced=teacher_forced, eval_steps=1,
                                          splits=SPLITS, inference=Evaluated)  # fmt: skip
            assert results == {"textchem_demo_forward": {"accuracy": 0.5}}
            assert "no teacher-forced evaluation" in caplog.text
            assert train_lib._evaluate(trainer, state, 4, None, teacher_forced=None, eval_steps=1, splits=SPLITS,
                                       inference=missing) == {}  # fmt: skip
            assert "no inference evaluation: uspto50k split 'validation' not found" in caplog.text
    finally:
        datasets.set_data_dir(None)


SPLITS = {"teacher-forced": "validation", "decoding": "validation"}


class _Decoded:
    """An inference evaluation's outcome, for `_evaluate`'s table (decoding itself is tested in test_evaluation): a
    user's task that sorts before `teacher_forced`, and one of ours after it."""

    split = "test"
    examples = {"my_text2smiles": 2, "textchem_demo_forward": 2}

    def evaluate(self, params, step):
        return {"my_text2smiles": {"exact_match": 0.5}, "textchem_demo_forward": {"accuracy": 0.5}}


def test_the_evaluation_table_puts_the_teacher_forced_row_first_and_names_each_parts_split(tmp_path, capsys):
    """The teacher_forced row sorted among the tasks (between my_text2smiles and textchem_demo_forward), and the
    heading named the teacher-forced split above metrics decoded on the test split."""
    trainer = trainer_lib.Trainer(tiny_t5(), optax.sgd(1e-3), partitioning.make_mesh())
    state = trainer.init_state(jax.random.key(0))
    teacher_forced = train_lib._teacher_forced_datasets(
        trainer, DatasetConfig("textchem_demo_forward", LENGTHS, "validation", 4, shuffle=False), 1, 0)
    progress = train_lib._Progress(str(tmp_path), 4, 0)
    evaluate = functools.partial(train_lib._evaluate, trainer, state, 4, progress, teacher_forced=teacher_forced,
                                 eval_steps=1, splits={"teacher-forced": "validation", "decoding": "test"})  # fmt: skip
    assert set(evaluate(inference=_Decoded)) == {"teacher_forced", "my_text2smiles", "textchem_demo_forward"}
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "evaluation at step 4 (teacher-forced: validation; decoding: test):"
    rows = [line for line in lines[1:] if not line.startswith(" ")]
    assert rows[:3] == ["teacher_forced", "my_text2smiles (2 examples)", "textchem_demo_forward (2 examples)"], lines

    evaluate(inference=None)  # the part that ran is the one named
    assert capsys.readouterr().out.splitlines()[0] == "evaluation at step 4 (validation):"
    progress.flush()


@pytest.mark.slow
def test_a_runs_final_evaluation_names_the_split_of_each_part_and_its_start_the_cut_examples(tmp_path, capsys, caplog):
    """The base config: teacher-forced on validation, decoding on test. The heading said `(validation)` above the
    test split's decoded metrics; the training data's over-long examples were cut unsaid."""
    with caplog.at_level(logging.WARNING, logger="textchem_jax.train"):
        train_lib.train(model=tiny_t5(), model_dir=str(tmp_path), optimizer=optax.sgd(1e-3), total_steps=1, eval_steps=1,
                        train_dataset_cfg=DatasetConfig("textchem_demo_forward", LENGTHS, "train", 4),
                        train_eval_dataset_cfg=DatasetConfig("textchem_demo_forward", LENGTHS, "validation", 4),
                        infer_eval_dataset_cfg=DatasetConfig("textchem_demo_forward", LENGTHS, "test", 4, pack=False,
                                                             num_examples=2))  # fmt: skip
    assert "evaluation at step 1 (teacher-forced: validation; decoding: test):" in capsys.readouterr().out
    said = [record.getMessage() for record in caplog.records if "training cuts them" in record.getMessage()]
    assert len(said) == 1 and said[0].startswith("textchem_demo_forward: ") and " train examples have inputs " in said[0]


def test_splits_heading_names_one_split_where_the_parts_agree():
    assert train_lib._splits_heading({"teacher-forced": "validation", "decoding": "validation"}) == "validation"
    assert train_lib._splits_heading({"decoding": "test"}) == "test"
    assert (train_lib._splits_heading({"teacher-forced": "validation", "decoding": "test"})
            == "teacher-forced: validation; decoding: test")  # fmt: skip


def test_training_says_how_many_of_each_tasks_examples_it_cuts(caplog):
    """Evaluation and inference said `TASK: N of M SPLIT examples have inputs longer than L tokens`; training cut
    them without a word. Counted on each task's first examples, and says so when the split has more."""
    import seqio

    from textchem_jax.run_config import import_task_module

    model = tiny_t5()
    cfg = DatasetConfig("textchem_demo", LENGTHS, "train", 4)
    import_task_module(None, model)
    task = seqio.get_mixture_or_task("textchem_demo_text2mol")
    lengths = [len(example["inputs"]) for example in
               task.get_dataset(None, split="train", shuffle=False).take(100).as_numpy_iterator()]  # fmt: skip
    cut = sum(length > LENGTHS["inputs"] for length in lengths)
    assert cut  # the demo's descriptions are longer than 48 tokens
    with caplog.at_level(logging.WARNING, logger="textchem_jax.train"):
        train_lib._say_cut_training_examples(cfg, model, checked=100)
    said = [record.getMessage() for record in caplog.records if record.name == "textchem_jax.train"]
    assert (f"textchem_demo_text2mol: {cut} of 100 train examples have inputs longer than 48 tokens (longest "
            f"{max(lengths)}); training cuts them. Raise TASK_FEATURE_LENGTHS['inputs'] to keep them whole. (counted "
            "on its first 100 train examples)") in said, said  # fmt: skip
    said_of = [(line.split(":")[0], line.split(" have ")[1].split()[0]) for line in said]  # (task, feature)
    assert len(said_of) == len(set(said_of)) and ("textchem_demo_mol2text", "targets") in said_of, said

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="textchem_jax.train"):
        train_lib._say_cut_training_examples(DatasetConfig("textchem_demo_text2mol", LENGTHS, "train", 4), model,
                                             checked=1000)  # fmt: skip
    said = [record.getMessage() for record in caplog.records if record.name == "textchem_jax.train"]
    whole = sum(1 for _ in task.get_dataset(None, split="train", shuffle=False).as_numpy_iterator())
    assert whole < 1000  # the whole split read: no "first N" to say
    inputs = [line for line in said if " have inputs " in line]
    assert len(inputs) == 1 and f" of {whole} train examples have inputs" in inputs[0] and "counted on" not in inputs[0]


def _predictions_only(predictions):  # SeqIO calls a metric function as metric_fn(targets, predictions)
    return {"x": 0.0}


@pytest.fixture
def checked_tasks():
    """A user's tasks with the mistakes the start-up checks catch: no 'validation' split (alone, and in a mixture
    with one of ours), a metric function of another signature, no targets."""
    import seqio
    import tensorflow as tf

    from textchem_jax import run_config

    run_config.register_our_tasks()
    features = seqio.get_mixture_or_task("textchem_demo_forward").output_features  # a mixture needs them alike

    def examples(split, shuffle_files, seed=None):
        return tf.data.Dataset.from_tensors({"inputs": "CCO", "targets": "CCO"})

    def register(name, splits=("train", "validation"), metric_fns=(), inputs_only=False):
        seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(examples, splits=splits),
                               preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
                               output_features={"inputs": features["inputs"]} if inputs_only else features,
                               metric_fns=list(metric_fns))  # fmt: skip

    names = ["checked_no_validation", "checked_predictions_only", "checked_no_targets"]
    try:
        register(names[0], splits=("train", "test"))
        register(names[1], metric_fns=[_predictions_only])
        register(names[2], inputs_only=True)
        seqio.MixtureRegistry.add("checked_no_validation_mix", [(names[0], 1.0), ("textchem_demo_forward", 1.0)])
        yield
    finally:
        if "checked_no_validation_mix" in seqio.MixtureRegistry.names():
            seqio.MixtureRegistry.remove("checked_no_validation_mix")
        for name in names:
            if name in seqio.TaskRegistry.names():
                seqio.TaskRegistry.remove(name)


def _train_checked(model_dir, name):
    return train_lib.train(model=tiny_t5(), model_dir=str(model_dir), optimizer=optax.sgd(1e-3), total_steps=2,
                           train_dataset_cfg=DatasetConfig(name, LENGTHS, "train", 4),
                           train_eval_dataset_cfg=DatasetConfig(name, LENGTHS, "validation", 4),
                           infer_eval_dataset_cfg=DatasetConfig(name, LENGTHS, "validation", 4, pack=False, num_examples=2))  # fmt: skip


def test_a_task_without_the_evaluation_split_is_said_before_the_first_step(tmp_path, caplog, checked_tasks):
    """A task without a 'validation' split trained, then stopped at the first in-training evaluation with a 16-frame
    KeyError: 'validation' (the steps since the last checkpoint lost): one line now, before MODEL_DIR is made. A
    mixture's task without the split is said once, at the start, instead of SeqIO's log line at every evaluation."""
    import seqio

    from textchem_jax import run_config

    with pytest.raises(ValueError, match=r"^task checked_no_validation has no 'validation' split \(its splits: train, "
                                         r"test\), which train_eval/ and infer_eval/ read: add a 'validation' split to "
                                         r"the task's source, or bind train_eval/run_config\.DatasetConfig\.split and "
                                         r"infer_eval/run_config\.DatasetConfig\.split to one it has \(e\.g\. "
                                         r"--gin\.train_eval/run_config\.DatasetConfig\.split=\"'test'\"\)$"):  # fmt: skip
        _train_checked(tmp_path / "run", "checked_no_validation")
    assert not (tmp_path / "run").exists()

    mixture = DatasetConfig("checked_no_validation_mix", LENGTHS, "validation", 4, shuffle=False)
    with caplog.at_level("WARNING"):
        train_lib._check_evaluation_data(tiny_t5(), DatasetConfig("checked_no_validation_mix", LENGTHS, "train", 4),
                                         mixture, dataclasses.replace(mixture, pack=False, num_examples=2))  # fmt: skip
    said = [r.getMessage() for r in caplog.records if r.name == "textchem_jax.train"]
    assert said == ["mixture checked_no_validation_mix: task checked_no_validation has no 'validation' split (its "
                    "splits: train, test), so train_eval/ and infer_eval/ read the mixture's other tasks only"]
    caplog.clear()
    with caplog.at_level("WARNING"):
        seqio.get_mixture_or_task(mixture.mixture_or_task_name).get_dataset(LENGTHS, split="validation", shuffle=False)
        assert "Task checked_no_validation has no 'validation' split, skipping." in caplog.text  # SeqIO's, each read
        caplog.clear()
        run_config.get_dataset(mixture, tiny_t5())
    assert "has no 'validation' split" not in caplog.text  # said once, above


def test_textchem_eval_says_a_mixtures_task_without_the_split_and_names_its_own_binding(tmp_path, caplog,
                                                                                      checked_tasks):  # fmt: skip
    """textchem-eval of a mixture one of whose tasks lacks the split ended with the other tasks' table and status 0,
    the user's task left out without a word (T5X says it in an INFO log line)."""
    import flax.linen

    from textchem_jax import evaluate, run_config
    from textchem_jax.model_loading import write_params

    model = tiny_t5()
    params = jax.tree_util.tree_map(np.asarray, flax.linen.meta.unbox(model.init(jax.random.key(0))))
    (tmp_path / "run").mkdir()
    write_params(tmp_path / "run", params)  # a converted folder: no training
    mixture = DatasetConfig("checked_no_validation_mix", LENGTHS, "validation", 4, shuffle=False, pack=False,
                            num_examples=2)  # fmt: skip
    with caplog.at_level("WARNING"):
        results = evaluate.evaluate(model=model, checkpoint_path=str(tmp_path / "run"), dataset_cfg=mixture,
                                    output_dir=str(tmp_path / "eval"))  # fmt: skip
    assert list(results) == ["textchem_demo_forward"]
    said = [r.getMessage() for r in caplog.records if r.name == "textchem_jax.evaluate"]
    assert said == ["mixture checked_no_validation_mix: task checked_no_validation has no 'validation' split (its "
                    "splits: train, test), so the evaluation reads the mixture's other tasks only"]
    alone = dataclasses.replace(mixture, mixture_or_task_name="checked_no_validation")
    with pytest.raises(ValueError, match=r"which the evaluation reads: .* bind run_config\.DatasetConfig\.split to one "
                                         r"it has \(e\.g\. --gin\.run_config\.DatasetConfig\.split=\"'test'\"\)$"):  # fmt: skip
        run_config.check_splits({"": alone})


def test_a_slice_of_a_split_the_tasks_have_passes_the_start_up_check():
    """A TFDS source reads `validation[:1000]` of its `validation` (T5X's recipes slice evaluation splits so): the
    check refused every slice its split list did not spell out."""
    from textchem_jax import run_config

    run_config.register_our_tasks()
    for split in ("validation[:2]", "train[:90%]"):
        assert run_config.check_splits({"train_eval": DatasetConfig("textchem_demo_forward", LENGTHS, split, 4)}) == []
    with pytest.raises(ValueError, match=r"has no 'nosuch\[:2\]' split"):
        run_config.check_splits({"train_eval": DatasetConfig("textchem_demo_forward", LENGTHS, "nosuch[:2]", 4)})


def test_a_metric_function_seqio_cannot_call_is_named_before_the_first_step(tmp_path, checked_tasks):
    """It failed at the first in-training evaluation, in seqio's words, naming neither the task nor the function."""
    with pytest.raises(ValueError, match=r"^task checked_predictions_only: metric_fns\[0\] "
                                         r"test_training_behaviour\._predictions_only takes \(predictions\); SeqIO calls it "
                                         r"as metric_fn\(targets, predictions\) \(or targets, scores / targets, "
                                         r"predictions, aux_values\)"):  # fmt: skip
        _train_checked(tmp_path / "run", "checked_predictions_only")
    assert not (tmp_path / "run").exists()


def test_a_task_without_targets_is_named_before_the_first_step(tmp_path, checked_tasks):
    """It trained into AutoGraph's "in user code" stack ending "Dataset has incorrect type for feature 'targets'"."""
    with pytest.raises(ValueError, match=r"^task checked_no_targets has the output features inputs, the model reads "
                                         r"inputs and targets: add 'targets' to the task's output_features"):  # fmt: skip
        _train_checked(tmp_path / "run", "checked_no_targets")
    assert not (tmp_path / "run").exists()


def test_textchem_eval_names_the_task_without_targets_and_the_metric_function_seqio_cannot_call(tmp_path, checked_tasks):
    """The evaluator checks what the training's start-up checks do (they failed deep in SeqIO there too)."""
    from textchem_jax import partitioning
    from textchem_jax.evaluator import InferenceEvaluator

    cfg = DatasetConfig("checked_no_targets", LENGTHS, "validation", 4, pack=False)
    with pytest.raises(ValueError, match=r"^task checked_no_targets has the output features inputs, the model reads"):
        InferenceEvaluator(tiny_t5(), cfg, str(tmp_path), partitioning.make_mesh())
    cfg = DatasetConfig("checked_predictions_only", LENGTHS, "validation", 4, pack=False)
    with pytest.raises(ValueError, match=r"^task checked_predictions_only: metric_fns\[0\] \S+_predictions_only takes"):
        InferenceEvaluator(tiny_t5(), cfg, str(tmp_path), partitioning.make_mesh())


def test_a_batch_the_meshs_data_axis_does_not_divide_is_one_line_before_the_run_folder_is_made(tmp_path):
    """BATCH_SIZE 10 on 8 devices with NUM_PARTITIONS=2 (data axis 4): JAX's sharding error at the first step,
    naming neither BATCH_SIZE nor a fix, after config.gin and an empty checkpoints/ were written."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "textchem_jax.train", "--gin_file=experiments/quickstart.gin",
               f"--gin.MODEL_DIR='{run}'", "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=10", "--gin.NUM_PARTITIONS=2"]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    assert ("train/ batch size 10 (gin BATCH_SIZE) is not a multiple of the mesh's data axis (4: 8 devices / "
            "NUM_PARTITIONS 2): use 8 or 12, or change NUM_PARTITIONS") in result.stderr  # fmt: skip
    assert "Traceback" not in result.stderr and not run.exists()


@pytest.mark.slow
def test_the_readmes_notebook_recipe_describes_its_run_as_textchem_train_does(tmp_path):
    """`launch.configured(train.train)()` (the README's notebook recipe) wrote no config.gin nor provenance.json:
    textchem-report and textchem-robustness refused the run ("has neither ... config.gin")."""
    import gin

    from textchem_jax import launch, report

    launch.parse_gin(["experiments/quickstart.gin"], [
        f"MODEL_DIR = '{tmp_path}'", "TRAIN_STEPS = 2", "BATCH_SIZE = 4", "TASK_FEATURE_LENGTHS = {'inputs': 32, 'targets': 32}",
        "train_lib.train.eval_steps = 1", "infer_eval/run_config.DatasetConfig.num_examples = 2"])  # fmt: skip
    try:
        results = launch.configured(train_lib.train)()
    finally:
        gin.clear_config()
    assert "textchem_demo_forward" in results
    assert "TRAIN_STEPS = 2" in (tmp_path / "config.gin").read_text() and (tmp_path / "provenance.json").exists()
    assert launch.saved_run(str(tmp_path)).mixture_or_task_name == "textchem_demo"
    assert (pathlib.Path(report.run_report(str(tmp_path), str(tmp_path / "report")))).exists()
