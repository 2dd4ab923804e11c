"""`textchem-train` as 2 processes on 127.0.0.1 (gloo), through its multi-host flags, the way a pod runs it.

A process killed mid-run makes the other exit at once with one clear line (not a hang, not the heartbeat
timeout's abort); rerunning both resumes from the last complete checkpoint, trains on and evaluates, and only
process 0 writes the run's own files.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from gcs_emulator import free_port
from helpers import ONE_TASK_EVALUATION
from textchem_jax.launch import LOST_PEER_EXIT_CODE

pytestmark = pytest.mark.slow

FLAGS = [
    "--gin_file=experiments/quickstart.gin", "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 32}", "--gin.BATCH_SIZE=4",
    "--gin.run_config.CheckpointConfig.period=2", "--gin.train_lib.train.log_period=1",
    "--gin.train_lib.train.eval_steps=1", "--gin.infer_eval/run_config.DatasetConfig.num_examples=2",
    "--heartbeat_timeout_seconds=20", *ONE_TASK_EVALUATION,
]  # fmt: skip


def _start(model_dir: pathlib.Path, logs: pathlib.Path, *flags: str) -> list[subprocess.Popen]:
    port = free_port()
    common = ["textchem-train", *FLAGS, f"--gin.MODEL_DIR='{model_dir}'", f"--coordinator_address=127.0.0.1:{port}",
              "--process_count=2", *flags]  # fmt: skip
    logs.mkdir(exist_ok=True)
    return [
        subprocess.Popen([*common, f"--process_index={i}"], stdout=(logs / f"out{i}").open("w"), stderr=(logs / f"err{i}").open("w"))
        for i in range(2)
    ]


def _wait(processes: list[subprocess.Popen], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in processes]
    finally:
        for p in processes:
            p.kill()


def test_two_process_quickstart_survives_a_dead_process_and_resumes(tmp_path):
    run = tmp_path / "run"
    first_logs = tmp_path / "first"
    first = _start(run, first_logs, "--gin.TRAIN_STEPS=1000")
    deadline = time.monotonic() + 600
    committed = run / "checkpoints" / "2"  # orbax renames the step's folder into place once every process wrote it
    while not (committed.is_dir() and "step 3/" in (first_logs / "out0").read_text()) and time.monotonic() < deadline:
        assert first[0].poll() is None, (first_logs / "err0").read_text()[-3000:]
        time.sleep(0.2)
    assert committed.is_dir(), f"no committed checkpoint 2 within 10 minutes:\n{(first_logs / 'out0').read_text()[-2000:]}"
    first[1].kill()
    killed = time.monotonic()
    code = _wait(first[:1], timeout=120)[0]
    waited = time.monotonic() - killed
    error = (first_logs / "err0").read_text()
    assert code == LOST_PEER_EXIT_CODE, error[-3000:]
    assert "textchem-train: process 0 of 2 lost another process of the run" in error
    assert waited < 60, f"the survivor took {waited:.0f} s to exit"  # bounded: no wait for the heartbeat timeout

    second_logs = tmp_path / "second"
    second = _start(run, second_logs, "--gin.TRAIN_STEPS=6")
    codes = _wait(second, timeout=900)
    outputs = [(second_logs / f"out{i}").read_text() for i in range(2)]
    assert codes == [0, 0], (second_logs / "err0").read_text()[-3000:] + (second_logs / "err1").read_text()[-3000:]
    resumed = re.search(r"resumed from step (\d+)", outputs[0])
    assert resumed and int(resumed.group(1)) in (2, 4), outputs  # the last complete checkpoint
    assert "step 6/6" in outputs[0]

    # Evaluated at the end, once: one metrics row per evaluated step, written by process 0 alone.
    metrics = [json.loads(line) for line in (run / "inference_eval" / "textchem_demo_forward-metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in metrics] == [6] and "accuracy" in metrics[0]
    events = [path.name for path in run.rglob("events.out.tfevents.*")]  # events.out.tfevents.<time>.<host>.<pid>...
    assert {name.split(".")[5] for name in events} == {str(first[0].pid), str(second[0].pid)}, events
    assert "accuracy" in outputs[0] and "accuracy" not in outputs[1]  # the results table comes from process 0

    # A damaged latest step is set aside once, by process 0 (every host renamed the shared folder: all but the
    # first failed), and both resume from the step before it; then SLURM's preemption SIGTERMs every process.
    state = sorted(path for path in (run / "checkpoints" / "6" / "state").rglob("*") if path.is_file() and path.stat().st_size > 64)
    state[0].write_bytes(bytes(state[0].stat().st_size))  # zeros: its checksum fails on every host
    third_logs = tmp_path / "third"
    third = _start(run, third_logs, "--gin.TRAIN_STEPS=1000")
    deadline = time.monotonic() + 600
    while "step 9/" not in (third_logs / "out0").read_text() and time.monotonic() < deadline:
        assert third[0].poll() is None, (third_logs / "err0").read_text()[-3000:]
        time.sleep(0.2)
    for process in third:  # both in the step loop: steps are collectives
        process.send_signal(signal.SIGTERM)
    codes = _wait(third, timeout=300)
    outputs = [(third_logs / f"out{i}").read_text() + (third_logs / f"err{i}").read_text() for i in range(2)]
    assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "resumed from step 4" in outputs[0] and "step 8/1000" in outputs[0], outputs
    assert "set aside as" in outputs[0] and "set aside as" not in outputs[1]
    assert (run / "checkpoints" / "6.corrupt").is_dir() and (run / "checkpoints" / "8").is_dir()
    # Said once, by process 0: under SLURM each process printed these, and a rerun's log had each line twice.
    said = ("resumed from step", "SIGTERM received", "preempted: saved step")
    assert all(line in outputs[0] for line in said) and not any(line in outputs[1] for line in said), outputs


def test_a_sigterm_before_training_ends_a_multi_process_command_as_on_one_host(tmp_path):
    """JAX's preemption notifier takes SIGTERM over at `jax.distributed.initialize` and only records it: a SLURM
    time-limit SIGTERM during a restore or compilation (or eval/infer) was swallowed and the process ran on."""
    port = free_port()
    program = ("import os, signal, time\nfrom textchem_jax import launch\n"
               f"launch.initialize_distributed('127.0.0.1:{port}', 1, 0)\n"
               "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(10)\nprint('ran on', flush=True)\n")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGTERM and "ran on" not in run.stdout, (run.returncode, run.stderr[-2000:])


PEER = """
import sys, time
from textchem_jax import launch
index, port, end = int(sys.argv[1]), sys.argv[2], sys.argv[3]
launch.initialize_distributed(f"127.0.0.1:{port}", 2, index, heartbeat_timeout_seconds=100)
print("connected", flush=True)
if index == 1 and end != "killed":
    time.sleep(3)
    launch.end_process(0 if end == "finished" else 1)
time.sleep(300 if index == 1 else 40)  # process 0: a step blocked in a collective, as long as nobody says otherwise
launch.end_process(0)
"""


@pytest.mark.parametrize("end", ["killed", "failed", "finished"])
def test_a_process_that_ends_without_finishing_stops_the_others_at_once(tmp_path, end):
    """A survivor blocked in a collective (gloo with 4 devices per process waits in its rendezvous) learnt of its
    dead peer only at the heartbeat timeout (100 s here) and then aborted: `F... client.h:80] Terminating process`, a
    page of C++ stack and status 134. Killed or failed, the other now exits 75 with one line within seconds; a
    process that finished leaves the others running."""
    port = str(free_port())
    processes = [subprocess.Popen([sys.executable, "-c", PEER, str(i), port, end], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(2)]  # fmt: skip
    try:
        for p in processes:  # (gloo prints its own lines on stdout first)
            assert "connected\n" in iter(p.stdout.readline, ""), p.stderr.read()[-3000:]
        if end == "killed":
            processes[1].kill()
        ended = time.monotonic()
        code = processes[0].wait(timeout=120)
        waited = time.monotonic() - ended
        error = processes[0].stderr.read()
    finally:
        for p in processes:
            p.kill()
    if end == "finished":
        assert code == 0 and waited > 30, error[-3000:]  # it slept on to its own end
        return
    assert code == LOST_PEER_EXIT_CODE, error[-3000:]
    assert "process 0 of 2 lost another process of the run (process 1 ended without finishing" in error
    assert waited < 30 and "Terminating process" not in error  # not JAX's abort at the heartbeat timeout


def test_evaluating_all_steps_on_two_hosts_takes_process_0s_steps(tmp_path):
    """`CHECKPOINT_STEPS='all'` on 2 hosts, each with its own EVAL_OUTPUT_DIR (only process 0 writes metrics): on a
    rerun, process 0 evaluated the new step while process 1 began with the first, and both hung in the collectives
    until the barrier failed."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from helpers import tiny_t5
    from textchem_jax import checkpoints as ckpt

    saver = ckpt.Checkpoints(str(tmp_path / "run" / "checkpoints"), keep=None)

    def save(step: int) -> None:
        params = jax.tree_util.tree_map(np.asarray, nn.meta.unbox(tiny_t5().init(jax.random.key(step))))
        saver.save(step, {"step": jnp.asarray(step, jnp.int32), "params": params})
        saver.wait()

    def evaluate_on_two_hosts() -> list[list[int]]:
        port = free_port()
        worker = pathlib.Path(__file__).with_name("multihost_eval_worker.py")
        processes = [subprocess.Popen([sys.executable, str(worker), f"127.0.0.1:{port}", str(i), str(tmp_path / "run"),
                                       str(tmp_path / f"eval{i}")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for i in range(2)]  # fmt: skip
        codes = _wait(processes, 400)
        outputs = [p.communicate() for p in processes]
        assert codes == [0, 0], [err[-2000:] for _, err in outputs]
        # Said once, by process 0: every host printed its step line, the table, the versions and the predictions
        # path (srun and TPU --worker=all show each N times).
        said = ("evaluating step", "textchem_demo_forward (4 examples)", "metric libraries:", "predictions and metrics:")
        assert all(line in outputs[0][0] for line in said), outputs[0][0]
        assert not any(line in outputs[1][0] for line in said), outputs[1][0]
        return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]

    save(1)
    save(2)
    assert evaluate_on_two_hosts() == [[1, 2], [1, 2]]
    save(4)
    saver.close()
    assert evaluate_on_two_hosts() == [[4], [4]]  # process 1's own folder has no metrics: it went by process 0's


def test_processes_given_different_settings_are_refused_alike_and_a_lost_evaluation_is_not_said_to_resume(tmp_path):
    """A BATCH_SIZE given to one host only ended that host in gloo's native abort ("collective mismatch", 40 lines of
    dump) and the other in "rerun the same command on every host to resume from the last checkpoint"; a num_examples
    on one host hung both. Now every process says which setting differs, before any work; folders may differ."""

    def evaluate(*per_process: list[str]) -> list[subprocess.CompletedProcess]:
        port = free_port()
        common = ["textchem-eval", "--gin_file=models/t5_1_1_tiny.gin", "--gin_file=runs/eval.gin",
                  f"--gin.CHECKPOINT_PATH='{tmp_path / 'no_run'}'", "--gin.MIXTURE_OR_TASK_NAME='textchem_demo_forward'",
                  "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 32}", f"--coordinator_address=127.0.0.1:{port}", "--process_count=2"]  # fmt: skip
        processes = [subprocess.Popen([*common, f"--process_index={i}", f"--gin.EVAL_OUTPUT_DIR='{tmp_path / f'eval{i}'}'",
                                       *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for i, flags in enumerate(per_process)]  # fmt: skip
        _wait(processes, timeout=300)
        return [subprocess.CompletedProcess(p.args, p.returncode, *p.communicate()) for p in processes]

    refused = evaluate(["--gin.BATCH_SIZE=4"], ["--gin.BATCH_SIZE=2"])
    said = ("configuration error: the processes of this run were given different settings: BATCH_SIZE is 4 on process "
            "0, 2 on process 1. Give every process the same flags and gin files")  # fmt: skip
    assert [r.returncode for r in refused] == [2, 2] and all(said in r.stderr for r in refused), [r.stderr[-2000:] for r in refused]
    assert all("EVAL_OUTPUT_DIR" not in r.stderr and "Traceback" not in r.stderr for r in refused)

    typo = evaluate([], ["--gin.BATCH_SIZ=2"])  # process 1 stops at its configuration error; process 0 was waiting
    assert typo[1].returncode == 2 and "BATCH_SIZ" in typo[1].stderr, typo[1].stderr[-2000:]
    assert typo[0].returncode == LOST_PEER_EXIT_CODE, typo[0].stderr[-2000:]
    assert "fix what it names there, then rerun the command on every host" in typo[0].stderr
    assert "resume from the last checkpoint" not in typo[0].stderr


def test_hosts_whose_input_files_differ_are_refused_before_any_decoding(tmp_path):
    """An input file of one name with other lines on each host (local disks) hung both processes of textchem-infer
    after process 0 had written its 5 predictions; its blank-line warning came from every host."""
    port = free_port()
    for i, lines in enumerate(("CCO\n\nCCN\n", "CCO\n\nCCN\nCCC\n")):
        (tmp_path / f"host{i}").mkdir()
        (tmp_path / f"host{i}" / "in.txt").write_text(lines)
    processes = [subprocess.Popen(
        ["textchem-infer", "--gin_file=models/t5_1_1_tiny.gin", "--gin_file=runs/infer.gin",
         f"--gin.CHECKPOINT_PATH='{tmp_path / 'no_run'}'", f"--gin.INFER_OUTPUT_DIR='{tmp_path / 'out'}'",
         "--gin.infer_lib.infer.input_file='in.txt'", "--gin.infer_lib.infer.task='mol2text'",  # its own on each host
         "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 32}", f"--coordinator_address=127.0.0.1:{port}",
         "--process_count=2", f"--process_index={i}"], cwd=tmp_path / f"host{i}", stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(2)]  # fmt: skip
    _wait(processes, timeout=300)
    errors = [p.communicate()[1] for p in processes]
    assert [p.returncode for p in processes] == [2, 2], [e[-2000:] for e in errors]
    said = ("the processes of this run read different inputs for textchem_mol2text: 2 inputs (SHA-256 ", " on process 0, "
            "3 inputs (SHA-256 ", " on process 1. Give every process the same input file")  # fmt: skip
    assert all(all(part in e for part in said) for e in errors), [e[-2000:] for e in errors]
    assert "lines are blank" in errors[0] and "lines are blank" not in errors[1]
    assert not (tmp_path / "out").exists()


def test_the_settings_compared_read_alike_in_processes_whose_string_hashes_differ():
    """A set's repr follows its strings' hashes, which differ between processes: a gin set (`{'a', 'b'}`) bound
    alike on every host would have been refused as a different setting."""
    program = "from textchem_jax.launch import _same_everywhere\nprint(_same_everywhere({'k': {'alpha', 'beta', 'gamma', 'delta'}}))"
    seen = {subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in range(6)}  # fmt: skip
    assert seen == {"{'k': {'alpha', 'beta', 'delta', 'gamma'}}\n"}
