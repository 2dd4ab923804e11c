"""The RDKit process pool inside a process that runs JAX, XLA and TensorFlow threads: workers from a
forkserver, a dead worker reported and replaced, 50 in-training evaluations in a row without a hang."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import time

import flax.linen as nn
import jax
import numpy as np
import pytest
from helpers import LENGTHS, tiny_t5
from pool_functions import parent_pid, square_or_die_once

import tasks  # noqa: F401  (registers the demo tasks)
from textchem_jax import partitioning, process_pool
from textchem_jax.evaluator import InferenceEvaluator
from textchem_jax.run_config import DatasetConfig


def test_workers_do_not_fork_from_this_process():
    jax.numpy.ones(3).block_until_ready()  # this process now runs XLA's threads
    parents = set(process_pool.start_parallel_map(parent_pid, list(range(256)), num_workers=2)())
    assert os.getpid() not in parents  # a fork of this process would have it as its parent


def test_a_worker_that_dies_is_reported_and_its_work_rerun_on_a_fresh_pool(tmp_path, caplog):
    items = [(value, str(tmp_path / "died")) for value in range(256)]
    with caplog.at_level(logging.WARNING, logger="textchem_jax.process_pool"):
        results = process_pool.start_parallel_map(square_or_die_once, items, num_workers=2)()
    assert results == [value * value for value in range(256)]
    assert (tmp_path / "died").exists()
    assert "a worker process of square_or_die_once died" in caplog.text and "a fresh pool" in caplog.text
    again = process_pool.start_parallel_map(parent_pid, list(range(256)), num_workers=2)()  # the new pool works
    assert len(again) == 256


def test_a_worker_killed_between_two_maps_is_reported_and_the_next_map_runs_on_a_fresh_pool(caplog):
    """The pool is already broken when the next map submits to it (a worker killed for memory between two
    evaluations): that death is reported too, not only one noticed while collecting."""
    process_pool.start_parallel_map(parent_pid, list(range(256)), num_workers=2)()
    pool = process_pool._pool
    os.kill(next(iter(pool._processes)), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not pool._broken and time.monotonic() < deadline:  # the executor's own thread notices the death
        time.sleep(0.05)
    assert pool._broken, "the executor did not notice its killed worker within 60 s"
    with caplog.at_level(logging.WARNING, logger="textchem_jax.process_pool"):
        parents = process_pool.start_parallel_map(parent_pid, list(range(256)), num_workers=2)()
    assert len(parents) == 256 and process_pool._pool is not pool
    assert "a worker process of parent_pid died" in caplog.text and "a fresh pool" in caplog.text


@pytest.mark.slow
def test_fifty_evaluations_in_a_row_do_not_hang(tmp_path, monkeypatch):
    monkeypatch.setattr(process_pool, "_MIN_ITEMS_PER_WORKER", 1)  # the pool scores even 8 molecules
    model = tiny_t5()
    params = jax.tree_util.tree_map(np.asarray, nn.meta.unbox(model.init(jax.random.key(7))))
    cfg = DatasetConfig("textchem_demo_text2mol", LENGTHS, "test", 4, shuffle=False, pack=False, num_examples=8)
    evaluator = InferenceEvaluator(model, cfg, str(tmp_path), partitioning.make_mesh())
    faulthandler.dump_traceback_later(600, exit=True)  # a hang ends the test with every thread's stack
    try:
        results = [evaluator.evaluate(params, step)["textchem_demo_text2mol"] for step in range(50)]
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert process_pool._pool is not None  # the metrics ran on the pool's workers
    assert all(result == results[0] for result in results)  # same params: the same metrics every time
    assert set(results[0]) >= {"validity", "morgan_fts", "exact_match"}


@pytest.mark.parametrize("interrupted", ["the caller's own work", "the collection"])
def test_an_interrupted_map_leaves_only_its_running_chunks_to_the_pool(tmp_path, interrupted):
    """A Ctrl-C in the caller's work between start and collection (text2mol's BLEU) left every chunk queued on the
    pool (496-512 of 512 items ran), and the next metric call waited behind them all; now only the chunks workers
    had started still run (64-125). An interrupted collection cancelled through `Executor.map` before (181-198)."""
    from pool_functions import slowly_noted

    items = [(value, str(tmp_path)) for value in range(512)]  # 16 chunks of 32 items, 0.64 s each
    collect = process_pool.start_parallel_map(slowly_noted, items, num_workers=2)
    time.sleep(0.5)  # workers start and run their first chunks
    with pytest.raises(KeyboardInterrupt):
        if interrupted == "the collection":  # outside `with`, as reactions and datasets collect: its own cancel
            signal.setitimer(signal.ITIMER_REAL, 0.5)  # SIGALRM while collect() waits on a chunk
            previous = signal.signal(signal.SIGALRM, signal.default_int_handler)
            try:
                collect()
            finally:
                signal.signal(signal.SIGALRM, previous)
        with collect:
            raise KeyboardInterrupt  # in the caller's own work
    process_pool.start_parallel_map(parent_pid, list(range(256)), num_workers=2)()  # queued behind what still runs
    ran = len(os.listdir(tmp_path))
    assert 0 < ran < len(items) // 2, f"{ran} of {len(items)} items ran after the interrupt"
    with process_pool.start_parallel_map(parent_pid, list(range(256)), num_workers=2) as collect:
        pass  # a clean exit cancels nothing: the results may be collected after the block
    assert len(collect()) == 256
    process_pool.shutdown_pool()


def test_a_ctrl_c_during_the_submission_cancels_the_chunks_submitted(tmp_path, monkeypatch):
    """A Ctrl-C raised in the submission loop, before any StartedMap holds the futures: all 16 chunks ran on and the
    next map waited behind them (512 of 512 items ran). Now the submitted chunks are cancelled."""
    import concurrent.futures

    from pool_functions import slowly_noted

    submit, calls = concurrent.futures.ProcessPoolExecutor.submit, []

    def interrupted_submit(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 16:
            os.kill(os.getpid(), signal.SIGINT)  # a terminal's Ctrl-C as the last of the 16 chunks is submitted
        return submit(self, *args, **kwargs)

    monkeypatch.setattr(concurrent.futures.ProcessPoolExecutor, "submit", interrupted_submit)
    items = [(value, str(tmp_path)) for value in range(512)]  # 16 chunks of 32 items, 0.64 s each
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a pytest-xdist worker ignores SIGINT
    try:
        with pytest.raises(KeyboardInterrupt):
            process_pool.start_parallel_map(slowly_noted, items, num_workers=2)()
    finally:
        signal.signal(signal.SIGINT, previous)
    monkeypatch.setattr(concurrent.futures.ProcessPoolExecutor, "submit", submit)
    process_pool.start_parallel_map(parent_pid, list(range(256)), num_workers=2)()  # queued behind what still runs
    ran = len(os.listdir(tmp_path))
    assert ran < len(items) // 2, f"{ran} of {len(items)} items ran after the interrupt"
    process_pool.shutdown_pool()


def test_threads_sharing_the_pool_each_get_all_their_results():
    """seqio's evaluator scores each task on its own thread, so several threads map over the one pool at once,
    some asking for another number of workers (which replaces the pool): none loses or fails its work."""
    import concurrent.futures

    def mapped(call: int) -> list[int]:
        items = list(range(-call, -call - 200, -1))
        return process_pool.start_parallel_map(abs, items, num_workers=2 + call % 2)()  # a builtin: workers start fast

    with concurrent.futures.ThreadPoolExecutor(4) as threads:
        results = list(threads.map(mapped, range(24)))
    assert results == [list(range(call, call + 200)) for call in range(24)]
    process_pool.shutdown_pool()


def test_a_script_without_a_main_guard_scores_in_its_own_process_with_one_warning(tmp_path):
    """Workers import the main script again: one that calls us at its top level started workers from each
    worker, and Python stopped them with pages of tracebacks before the work was rerun here."""
    import subprocess
    import sys

    from pool_functions import __file__ as pool_functions_file

    work = ("import os\nfrom pool_functions import own_pid\nfrom textchem_jax import process_pool\n"
            "pids = process_pool.start_parallel_map(own_pid, list(range(300)), num_workers=2)()\n"
            "print(len(pids), set(pids) == {os.getpid()})\n")  # fmt: skip
    scripts = {"unguarded.py": work, "guarded.py": 'if __name__ == "__main__":\n' + "".join(f"    {line}\n" for line in work.splitlines())}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(pool_functions_file), os.environ.get("PYTHONPATH", "")])}
    results = {}
    for name, source in scripts.items():
        (tmp_path / name).write_text(source)
        results[name] = subprocess.run([sys.executable, name], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert results[name].returncode == 0, results[name].stderr
        assert "Traceback" not in results[name].stderr and "died" not in results[name].stderr, results[name].stderr
    unguarded, guarded = results["unguarded.py"], results["guarded.py"]
    assert unguarded.stdout.split() == ["300", "True"]  # all in the script's own process
    assert unguarded.stderr.count('has no `if __name__ == "__main__":` guard') == 1, unguarded.stderr
    assert guarded.stdout.split() == ["300", "False"] and "guard" not in guarded.stderr  # on the workers


def test_scripts_workers_cannot_run_again_score_in_their_own_process_whatever_their_name(tmp_path):
    """Workers run any main file again, not only one named `.py`: an unguarded `#!` script named `score_run` ran its
    top level 5 times with 242 lines of tracebacks, and an `.ipy` file with IPython magics killed every worker."""
    import importlib.util
    import subprocess
    import sys

    from pool_functions import __file__ as pool_functions_file

    work = ("import os\nfrom pool_functions import own_pid\nfrom textchem_jax import process_pool\nprint('top level')\n"
            "pids = process_pool.start_parallel_map(own_pid, list(range(300)), num_workers=2)()\n")  # fmt: skip
    runs = {"score_run": ([sys.executable, "score_run"], work + "print(len(pids), set(pids) == {os.getpid()})\n")}
    if importlib.util.find_spec("IPython") is not None:
        runs["cells.ipy"] = ([sys.executable, "-m", "IPython", "--no-banner", "--quick", "cells.ipy"],
                             work + "%time print(len(pids), set(pids) == {os.getpid()})\n")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(pool_functions_file), os.environ.get("PYTHONPATH", "")])}
    for name, (command, source) in runs.items():
        (tmp_path / name).write_text(source)
        run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert "Traceback" not in run.stderr + run.stdout and "died" not in run.stderr, run.stderr
        assert run.stdout.split()[:4] == ["top", "level", "300", "True"], run.stdout  # once, all in its own process
        assert run.stderr.count(f"{name} ") == 1 and "on one core" in run.stderr, run.stderr  # one warning


def test_a_terminals_ctrl_c_is_answered_by_the_main_process_alone():
    """A terminal's Ctrl-C goes to the whole process group: each pool worker printed "Process ForkServerProcess-2:"
    and a KeyboardInterrupt traceback under textchem-train's one line (2 workers: 38 lines). Now the process answers
    alone (one line, status 130) and exits."""
    import subprocess
    import sys

    from helpers import as_from_a_terminal
    from pool_functions import __file__ as pool_functions_file

    worker = os.path.join(os.path.dirname(pool_functions_file), "ctrl_c_pool_worker.py")
    child = subprocess.Popen(as_from_a_terminal([sys.executable, worker]), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        assert child.stdout.readline() == "ready\n"
        time.sleep(1.0)  # the workers wait for work
        os.killpg(child.pid, signal.SIGINT)
        _, stderr = child.communicate(timeout=120)  # the interpreter's shutdown does not hang on the pool
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 130 and stderr == "interrupted\n", stderr
