"""Checkpoints under faults: kills during saves, truncated and corrupted files, a full disk.

Real orbax and tf.data on a real file system: the kill trials run `checkpoint_kill_worker.py` (SIGKILL at
random moments of the saves, 32 trials); corruption cuts or flips bytes of the files a save wrote; the full
disk is a 1 MiB tmpfs where this machine lets us mount one, and a file-size limit (RLIMIT_FSIZE) everywhere;
TensorFlow's own full-disk error is raised by the data iterator's real write call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import sys
import time

import gin
import numpy as np
import optax
import pytest
import tensorflow as tf

from textchem_jax import checkpoints as ckpt
from textchem_jax import convert, launch

from helpers import ROOT
from test_checkpoints import _assert_bitwise_equal, _saved, _state
from test_training_behaviour import _train

WORKER = pathlib.Path(__file__).with_name("checkpoint_kill_worker.py")


@pytest.mark.slow
def test_kills_during_saves_resume_from_the_newest_committed_step_bitwise(tmp_path):
    result = subprocess.run([sys.executable, str(WORKER), str(tmp_path), "--trials", "32"], capture_output=True,
                            text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.stderr[-3000:]
    summary = json.loads(lines[-1])
    print(summary)
    assert summary["failures"] == [] and result.returncode == 0, summary
    assert summary["trials"] >= 30
    assert summary["killed_mid_write"] > 0  # some kills landed inside a save, before its commit
    assert summary["restored_steps"][-1] > summary["restored_steps"][0]
    assert summary["set_aside"] == []  # a kill never leaves a committed step that fails its checksums


def _array_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
    """The state's array files (OCDBT data), largest first."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return sorted(files, key=lambda p: p.stat().st_size, reverse=True)


def _flip_bytes(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))


def _truncate(path: pathlib.Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


@pytest.mark.parametrize("damage", [_flip_bytes, _truncate], ids=["flipped", "truncated"])
def test_a_damaged_latest_step_falls_back_to_the_one_before(tmp_path, capsys, damage):
    _saved(tmp_path, steps=(1, 2, 3)).close()
    damaged = _array_files(tmp_path / "3")[0]
    damage(damaged)
    checkpoints = ckpt.Checkpoints(str(tmp_path))
    state, step = checkpoints.restore(ckpt.abstract_like(_state("dict")))
    assert step == 2
    _assert_bitwise_equal(state, _state("dict", 2, scale=2))
    printed = capsys.readouterr().out
    assert "step 3" in printed and damaged.name in printed and "3.corrupt" in printed
    assert sorted(os.listdir(tmp_path)) == ["1", "2", "3.corrupt"]  # kept for a post-mortem, not deleted
    checkpoints.save(3, _state("dict", 3, scale=3))  # the run goes on and saves step 3 again
    checkpoints.close()
    assert ckpt.Checkpoints(str(tmp_path)).restore(ckpt.abstract_like(_state("dict")))[1] == 3
    # Damaged again: 3.corrupt is taken ("Cannot rename ... already exists" stopped the resume, exit 2).
    damage(_array_files(tmp_path / "3")[0])
    capsys.readouterr()
    assert ckpt.Checkpoints(str(tmp_path)).restore(ckpt.abstract_like(_state("dict")))[1] == 2
    assert f"set aside as {tmp_path / '3.corrupt-2'}" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["1", "2", "3.corrupt", "3.corrupt-2"]


def test_without_fallback_a_damaged_step_is_an_error_naming_the_step_the_file_and_the_flag(tmp_path):
    _saved(tmp_path, steps=(1, 2)).close()
    damaged = _array_files(tmp_path / "2")[0]
    _truncate(damaged)
    with pytest.raises(ckpt.CheckpointError, match="step 2") as error:
        ckpt.Checkpoints(str(tmp_path)).restore(ckpt.abstract_like(_state("dict")), fallback=False)
    assert str(damaged) in str(error.value) and "--restore_fallback" in str(error.value)
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]  # nothing moved


def test_an_unsealed_step_with_unreadable_metadata_falls_back(tmp_path):
    """A step killed after orbax's commit but before our checksums: orbax's own errors still lead to the fallback."""
    _saved(tmp_path, steps=(1, 2)).close()
    (tmp_path / "2" / ckpt.CHECKSUMS_FILE).unlink()
    _flip_bytes(tmp_path / "2" / "state" / "_METADATA")
    assert ckpt.Checkpoints(str(tmp_path)).restore(ckpt.abstract_like(_state("dict")))[1] == 1


def _damage_step_metadata(directory: pathlib.Path) -> None:
    """Step 1's `_CHECKPOINT_METADATA` cut short, step 2's deleted, and an empty step 3: what orbax logs about."""
    os.truncate(directory / "1" / "_CHECKPOINT_METADATA", 10)
    (directory / "2" / "_CHECKPOINT_METADATA").unlink()
    (directory / "3").mkdir()


_ORBAX_METADATA_LINES = ("Metadata file does not exist", "Failed to json parse Metadata file")


def test_damaged_step_metadata_is_said_once_by_us_not_by_orbax_logs(tmp_path, caplog, capfd):
    """orbax logged `W... checkpoint.py:202] Metadata file does not exist` (or `E... Failed to json parse`) before our
    own line naming the step and the file."""
    _saved(tmp_path, steps=(1, 2)).close()
    _damage_step_metadata(tmp_path)
    capfd.readouterr()
    with caplog.at_level(logging.WARNING), pytest.raises(ckpt.CheckpointError, match="not starting from scratch"):
        ckpt.Checkpoints(str(tmp_path)).restore(ckpt.abstract_like(_state("dict")))
    with caplog.at_level(logging.WARNING), pytest.raises(ckpt.CheckpointError, match="_CHECKPOINT_METADATA is missing"):
        ckpt.load_params(str(tmp_path), ckpt.abstract_like(_state("dict")["params"]), step=2)  # textchem-eval's way
    printed = "".join(capfd.readouterr()) + caplog.text
    assert "step 3" in printed and "_CHECKPOINT_METADATA is missing" in printed and "is 10 bytes" in printed
    assert not any(line in printed for line in _ORBAX_METADATA_LINES), printed
    assert ckpt._not_damaged_step_metadata not in logging.getLogger("absl").filters  # only while restoring


@pytest.mark.slow
def test_textchem_train_on_damaged_step_metadata_prints_no_orbax_log_lines(tmp_path):
    _saved(tmp_path / "run" / "checkpoints", steps=(1, 2)).close()
    _damage_step_metadata(tmp_path / "run" / "checkpoints")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "3")
    command = [sys.executable, "-m", "textchem_jax.train", "--gin_file=experiments/quickstart.gin",
               f"--gin.MODEL_DIR='{tmp_path / 'run'}'", "--norestore_fallback"]  # fmt: skip
    cli = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 4, cli.stderr[-3000:]
    assert "_CHECKPOINT_METADATA is missing" in cli.stderr and "Traceback" not in cli.stderr
    assert not any(line in cli.stdout + cli.stderr for line in _ORBAX_METADATA_LINES), cli.stderr[-3000:]


def test_when_every_step_is_damaged_the_run_stops_instead_of_starting_afresh(tmp_path):
    _saved(tmp_path, steps=(1, 2)).close()
    for step in ("1", "2"):
        _flip_bytes(_array_files(tmp_path / step)[0])
    with pytest.raises(ckpt.CheckpointError, match="not starting from scratch"):
        ckpt.Checkpoints(str(tmp_path)).restore(ckpt.abstract_like(_state("dict")))
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]


def test_another_model_is_a_shape_error_not_a_corrupt_checkpoint(tmp_path):
    _saved(tmp_path, steps=(1, 2)).close()
    other = _state("dict")
    other["params"]["embedding"] = np.zeros((7, 2), np.int32)
    with pytest.raises(ValueError, match="embedding"):
        ckpt.Checkpoints(str(tmp_path)).restore(ckpt.abstract_like(other))
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]


def test_another_optimizer_is_a_settings_error_not_a_corrupt_checkpoint(tmp_path):
    """Resuming with --gin.OPTIMIZER=@optax.adafactor() on an Adam run: every step was called damaged, and the
    message told the user to move the checkpoints away."""
    _saved(tmp_path, steps=(1, 2)).close()
    other = _state("dict")
    other["opt_state"] = optax.adafactor(1e-3).init(other["params"])
    with pytest.raises(ValueError, match=r"step 2 in .* holds another training state .*OPTIMIZER.*INITIAL_CHECKPOINT_PATH=") as error:
        ckpt.Checkpoints(str(tmp_path)).restore(ckpt.abstract_like(other))
    assert not isinstance(error.value, ckpt.CheckpointError)
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]  # nothing set aside


def test_evaluation_of_a_damaged_step_names_the_file_and_the_step_before_it(tmp_path):
    _saved(tmp_path, steps=(1, 2)).close()
    damaged = _array_files(tmp_path / "2")[0]
    _flip_bytes(damaged)
    with pytest.raises(ckpt.CheckpointError, match=damaged.name) as error:
        ckpt.load_params(str(tmp_path), ckpt.abstract_like(_state("dict")["params"]))
    assert f"its folder is {tmp_path / '1'}" in str(error.value)
    params = ckpt.load_params(str(tmp_path), ckpt.abstract_like(_state("dict")["params"]), step=1)  # the fix works
    _assert_bitwise_equal(params, _state("dict", 1)["params"])


def test_evaluation_of_an_unsealed_step_without_its_state_is_a_checkpoint_error(tmp_path):
    """A step cut before our checksums and missing its state: orbax's KeyError became a traceback."""
    _saved(tmp_path, steps=(1,)).close()
    (tmp_path / "1" / ckpt.CHECKSUMS_FILE).unlink()
    shutil.rmtree(tmp_path / "1" / "state")
    with pytest.raises(ckpt.CheckpointError, match="step 1: .*state has unreadable metadata.*no earlier step"):
        ckpt.load_params(str(tmp_path), ckpt.abstract_like(_state("dict")["params"]))


@pytest.mark.slow
def test_training_resumes_past_a_corrupt_checkpoint_and_the_cli_flag_turns_the_fallback_off(tmp_path, capsys):
    _train(tmp_path / "run", train_steps=4)  # checkpoints at steps 2 and 4
    _flip_bytes(_array_files(tmp_path / "run" / "checkpoints" / "4")[0])
    command = [sys.executable, "-m", "textchem_jax.train", "--gin_file=experiments/quickstart.gin",
               f"--gin.MODEL_DIR='{tmp_path / 'run'}'", "--norestore_fallback"]  # fmt: skip
    cli = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 4, cli.stderr[-3000:]
    assert "step 4" in cli.stderr and "--restore_fallback" in cli.stderr and "Traceback" not in cli.stderr
    assert not (tmp_path / "run" / "config.gin").exists()  # written once the state is restored: a failed resume keeps the run's
    # The commands that read the run's latest step say the same in one line, with the step before it to use.
    step_2 = tmp_path / "run" / "checkpoints" / "2"
    evaluation = subprocess.run([sys.executable, "-m", "textchem_jax.evaluate", "--gin_file=models/t5_tiny.gin",
                                 "--gin_file=runs/eval.gin", f"--gin.CHECKPOINT_PATH='{tmp_path / 'run'}'",
                                 f"--gin.EVAL_OUTPUT_DIR='{tmp_path / 'eval'}'", "--gin.MIXTURE_OR_TASK_NAME='textchem_demo'",
                                 "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 32}"], cwd=ROOT, capture_output=True,
                                text=True, timeout=600)  # fmt: skip
    assert evaluation.returncode == 2 and "Traceback" not in evaluation.stderr, evaluation.stderr[-3000:]
    assert "step 4" in evaluation.stderr and f"its folder is {step_2}" in evaluation.stderr
    launch.parse_gin(["models/t5_1_1_tiny.gin"], [])  # the config.gin a textchem-train run of this model (v1.1) has
    launch.write_config(str(tmp_path / "run"))
    gin.clear_config()
    capsys.readouterr()
    assert convert.main([f"--checkpoint_dir={tmp_path / 'run'}", f"--hf_output_dir={tmp_path / 'hf'}"]) == 2
    assert f"its folder is {step_2}" in capsys.readouterr().err and not (tmp_path / "hf").exists()
    _train(tmp_path / "run", train_steps=6)
    out = capsys.readouterr().out
    assert "set aside" in out and "resumed from step 2" in out
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["2", "4", "4.corrupt", "6"]


def _large_state(step: int) -> dict:
    state = _state("dict", step, scale=step)
    state["params"]["big"] = np.random.default_rng(step).standard_normal(1 << 19).astype(np.float32)  # 2 MiB
    return state


def _mount_tmpfs(path: pathlib.Path, size: str) -> bool:
    path.mkdir()
    return os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                                capture_output=True).returncode == 0  # fmt: skip


def _save_until_full(directory: pathlib.Path) -> tuple[ckpt.CheckpointError, ckpt.Checkpoints]:
    checkpoints = ckpt.Checkpoints(str(directory), keep=None)
    checkpoints.save(1, _state("dict", 1, scale=1))
    checkpoints.wait()
    with pytest.raises(ckpt.CheckpointError) as error:
        checkpoints.save(2, _large_state(2))
        checkpoints.wait()
    return error.value, checkpoints


def _assert_step_one_intact(directory: pathlib.Path) -> None:
    state, step = ckpt.Checkpoints(str(directory)).restore(ckpt.abstract_like(_state("dict")))
    assert step == 1
    _assert_bitwise_equal(state, _state("dict", 1, scale=1))


def test_a_full_disk_is_a_clear_error_and_the_previous_checkpoint_stays_intact(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "1m"):
        pytest.skip("mounting a tmpfs is not permitted here (the RLIMIT_FSIZE test covers a write that fails)")
    try:
        error, checkpoints = _save_until_full(disk)
        assert "saving step 2" in str(error) and "step 1 is intact" in str(error) and "free space" in str(error)
        _assert_step_one_intact(disk)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _large_iterator():
    """A tf.data iterator whose checkpoint holds 2.4 MB: its shuffle buffer of 600 rows of 1,000 floats."""
    rows = np.random.default_rng(0).standard_normal((600, 1000)).astype(np.float32)
    iterator = iter(tf.data.Dataset.from_tensor_slices(rows).shuffle(600, seed=0))
    next(iterator)
    return iterator


def _assert_one_line_naming_the_steps(error: ckpt.CheckpointError) -> None:
    message = str(error)
    assert "\n" not in message and message.startswith("saving step 2 to ") and "No space left on device" in message
    assert "step 1 is intact; free space" in message and "{{" not in message and "[Op:" not in message


def test_a_full_disk_in_the_data_iterators_write_is_one_clear_line(tmp_path, monkeypatch):
    """TensorFlow's ResourceExhaustedError (not an OSError) from `tf.train.Checkpoint.write` went past `_saving`:
    textchem-train printed about 100 lines of traceback and exited 1. Raised here by the real write call."""
    checkpoints = ckpt.Checkpoints(str(tmp_path), keep=None)
    checkpoints.save(1, _state("dict", 1, scale=1), iter(tf.data.Dataset.range(8)))
    checkpoints.wait()

    def full_disk(self, prefix, options=None):
        node = "{{function_node __wrapped__SaveV2_dtypes_2_device_/job:localhost/replica:0/task:0/device:CPU:0}}"
        raise tf.errors.ResourceExhaustedError(None, None, f"{node} {prefix}_temp/part-00000; No space left on device [Op:SaveV2]")

    monkeypatch.setattr(tf.train.Checkpoint, "write", full_disk)
    with pytest.raises(ckpt.CheckpointError, match="writing the data iterator: .*process_0-of-1_temp") as error:
        checkpoints.save(2, _state("dict", 2, scale=2), iter(tf.data.Dataset.range(8)))
        checkpoints.wait()
    _assert_one_line_naming_the_steps(error.value)
    monkeypatch.undo()
    _assert_step_one_intact(tmp_path)


def test_a_bucket_failing_orbaxs_metadata_write_is_one_clear_line(tmp_path, monkeypatch):
    """A bucket that answers 503 past TensorFlow's retries fails orbax's `_CHECKPOINT_METADATA` write (etils writes
    gs:// through tf.io.gfile) with tf.errors.AbortedError, which is no OSError: it went past `_saving`, and
    textchem-train ended in a 99-line traceback. TensorFlow's own error, raised by the real write call."""
    from etils import epath

    checkpoints = ckpt.Checkpoints(str(tmp_path), keep=None)
    checkpoints.save(1, _state("dict", 1, scale=1))
    checkpoints.wait()
    kind = type(epath.Path(str(tmp_path)))
    write_text = kind.write_text

    def unavailable(self, *args, **kwargs):
        if self.name == "_CHECKPOINT_METADATA":
            raise tf.errors.AbortedError(None, None, f"All 10 retry attempts failed. The last failure: Unavailable: "
                                                     f"Error executing an HTTP request: HTTP response code 503 when "
                                                     f"uploading {self}")  # fmt: skip
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(kind, "write_text", unavailable)
    with pytest.raises(ckpt.CheckpointError) as error:
        checkpoints.save(2, _state("dict", 2, scale=2))
        checkpoints.wait()
    message = str(error.value)
    assert "\n" not in message and message.startswith("saving step 2 to ") and "HTTP response code 503" in message
    assert "step 1 is intact; free space" in message
    monkeypatch.undo()
    _assert_step_one_intact(tmp_path)


def test_a_hook_installed_while_a_commands_hooks_are_in_place_outlives_them(capfd):
    """checkpoints' filter of tensorstore's closed-loop callbacks, installed during training, was undone when
    training's and the command's hooks put theirs back on the way out: the callbacks that came after a failed save
    printed 344 tracebacks under the one-line error. Ours stay inside the filter, passing everything on."""
    from textchem_jax import cli, train

    reached: list = []
    before = sys.unraisablehook
    try:
        sys.unraisablehook = reached.append
        with cli._interrupts_kept(), train._Preemption():
            ckpt._drop_callbacks_into_closed_loops()
            installed = sys.unraisablehook
        assert sys.unraisablehook is installed
        closed = RuntimeError("Event loop is closed")
        unraisable = type("Unraisable", (), {"object": None, "exc_type": RuntimeError, "exc_value": closed,
                                             "exc_traceback": None})()  # fmt: skip
        sys.unraisablehook(unraisable)  # not from tensorstore's callback (no traceback): passed on, through ours
        interrupt = type("Unraisable", (), {"object": None, "exc_type": KeyboardInterrupt, "exc_traceback": None,
                                            "exc_value": KeyboardInterrupt()})()  # fmt: skip
        sys.unraisablehook(interrupt)  # the command has ended: no Ctrl-C is sent again
    finally:
        sys.unraisablehook = before
    assert reached == [unraisable, interrupt]


def test_callbacks_into_a_closed_event_loop_print_nothing(tmp_path, monkeypatch, capfd):
    """Once one write of an asynchronous save failed on a full disk, orbax closed its event loop while tensorstore
    finished the other writes: each printed a `RuntimeError: Event loop is closed` traceback (164-218 of them,
    ~660 lines). Made here the way tensorstore makes them: a tensorstore future awaited by a closed loop."""
    import tensorstore as ts

    reached: list = []
    monkeypatch.setattr(sys, "unraisablehook", reached.append)
    ckpt.Checkpoints(str(tmp_path)).close()
    promise, future = ts.Promise.new()

    async def wait_for_the_write():
        await future

    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda loop, context: None)  # not "Task was destroyed but it is pending"
    task = loop.create_task(wait_for_the_write())
    loop.run_until_complete(asyncio.sleep(0))  # the task now waits on tensorstore
    loop.close()
    promise.set_result(None)  # tensorstore calls `loop.call_soon_threadsafe`, on the closed loop
    del task
    assert reached == [] and "Event loop is closed" not in "".join(capfd.readouterr())
    sys.unraisablehook(type("Unraisable", (), {"object": None, "exc_type": RuntimeError, "exc_traceback": None,
                                              "exc_value": RuntimeError("Event loop is closed")})())  # fmt: skip
    assert len(reached) == 1  # an error of another origin reaches the hook before ours


def test_a_failed_asynchronous_save_is_raised_by_check_without_waiting_for_the_next_save(tmp_path):
    """The state's write failed in orbax's background thread and training went on to the next save (step 20 to
    30 in the report; 5,000 steps with the default period) before the error was said."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, limit[1]))
        checkpoints = ckpt.Checkpoints(str(tmp_path), keep=None)
        checkpoints.save(1, _state("dict", 1, scale=1))
        checkpoints.wait()
        checkpoints.save(2, _large_state(2))  # returns at once: the arrays are written in the background
        deadline = time.monotonic() + 120
        with pytest.raises(ckpt.CheckpointError) as error:
            while time.monotonic() < deadline:  # what a training loop does between its steps
                checkpoints.check()
                time.sleep(0.05)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)
    assert "saving step 2" in str(error.value) and "step 1 is intact" in str(error.value)
    checkpoints.check()  # said once
    _assert_step_one_intact(tmp_path)


@pytest.mark.parametrize("failing", ["state", "data_iterator"])
def test_a_full_tmpfs_is_one_clear_line_whichever_write_fails(tmp_path, failing):
    """The report's two full disks, for real where this machine lets us mount a tmpfs: the data iterator's write
    (a TensorFlow error) and the state's (orbax's background commit)."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "1m"):
        pytest.skip("mounting a tmpfs needs root (the injected failures above cover the same code paths)")
    try:
        checkpoints = ckpt.Checkpoints(str(disk), keep=None)
        checkpoints.save(1, _state("dict", 1, scale=1), iter(tf.data.Dataset.range(8)))
        checkpoints.wait()
        state, iterator = (_large_state(2), None) if failing == "state" else (_state("dict", 2, scale=2), _large_iterator())
        with pytest.raises(ckpt.CheckpointError) as error:
            checkpoints.save(2, state, iterator)
            checkpoints.wait()
        _assert_one_line_naming_the_steps(error.value)
        assert ("writing the data iterator" in str(error.value)) == (failing == "data_iterator")
        _assert_step_one_intact(disk)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_write_over_the_file_size_limit_is_a_clear_error_and_the_previous_checkpoint_stays_intact(tmp_path):
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, limit[1]))
        error, _ = _save_until_full(tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)
    assert "saving step 2" in str(error) and "step 1 is intact" in str(error)
    _assert_step_one_intact(tmp_path)
    assert tf.io.gfile.exists(str(tmp_path / "1" / ckpt.CHECKSUMS_FILE))
