"""Kill trials for `textchem_jax.checkpoints`: training processes killed with SIGKILL at random moments of
their checkpoint saves (orbax's write, its finalize and commit, our sealing), each resumed by the next.

A miniature training loop (Adam on 6 MB of state, batches from a tf.data iterator that is saved with the
state, a save every step, asynchronous as in `train.py`) runs once uninterrupted as the reference,
then `--trials` times in a row killed at a random delay after a random save began, and once more for 5 steps.
Each resumed process must restore the newest step committed in the folder when its predecessor died, with
the reference's state at that step bit for bit, and the last must end on the reference's state at its end.
Children fork from a forkserver that imported JAX, TensorFlow and orbax once, so a trial costs about 2 s
(1 s of it the restore). Prints one JSON summary line; exits non-zero on any failure.

  python tests/checkpoint_kill_worker.py DIR [--trials 32] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import random
import signal
import statistics
import sys
import time

PRELOAD = ["numpy", "jax", "optax", "orbax.checkpoint", "tensorflow", "textchem_jax.checkpoints"]


def _digest(state) -> str:
    import jax
    import numpy as np

    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(jax.device_get(state)):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()


def train(directory: str, total_steps: int, conn, measured_saves: int) -> None:
    """The run under test: resume, then one update and one save per step, reported on `conn` (with the state's
    digest; the first `measured_saves` saves are waited for and timed)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import tensorflow as tf

    from textchem_jax import checkpoints as ckpt

    optimizer = optax.adam(1e-2)
    rng = np.random.default_rng(0)
    params = {"kernel": jnp.asarray(rng.standard_normal((512, 1024)), jnp.float32),
              "bias": jnp.asarray(rng.standard_normal(1024), jnp.float32)}  # fmt: skip
    state = {"step": jnp.int32(0), "params": params, "opt_state": optimizer.init(params)}

    @jax.jit
    def update(state, x):
        grads = jax.grad(lambda p: jnp.mean(jnp.tanh(p["kernel"] * x + p["bias"]) ** 2))(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        return {"step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}

    iterator = iter(tf.data.Dataset.range(10**6).map(lambda i: tf.cast(i % 7, tf.float32) / 7.0))
    checkpoints = ckpt.Checkpoints(directory, keep=3)
    restored = checkpoints.restore(ckpt.abstract_like(state), iterator)
    step = 0
    if restored is not None:
        state, step = restored
    conn.send(("resumed", step, _digest(state)))
    while step < total_steps:
        state = update(state, jnp.float32(next(iterator).numpy()))
        step += 1
        start = time.perf_counter()
        conn.send(("saving", step, _digest(state) if measured_saves else None))
        checkpoints.save(step, state, iterator)
        if step <= measured_saves:
            checkpoints.wait()
            conn.send(("saved", step, time.perf_counter() - start))
    checkpoints.close()
    conn.send(("done", step, _digest(state)))


def committed_steps(directory: str) -> list[int]:
    """Step folders orbax has committed (it writes to a temporary name and renames when complete)."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def _start(ctx, directory: str, total_steps: int, measured_saves: int = 0):
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=train, args=(directory, total_steps, child, measured_saves), daemon=True)
    process.start()
    child.close()
    return process, parent


def _receive(conn, timeout: float):
    if not conn.poll(timeout):
        raise TimeoutError(f"no message from the training process in {timeout:.0f} s")
    return conn.recv()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds any one process may stay silent")
    args = parser.parse_args()
    from textchem_jax import checkpoints as ckpt

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    draw = random.Random(args.seed)
    started = time.perf_counter()

    # The reference: uninterrupted; its first saves are waited for, to know how long a save takes.
    steps = 4 * args.trials + 5  # a trial advances 1-3 saves and the kill delay: the killed runs never end
    process, conn = _start(ctx, os.path.join(args.directory, "reference"), steps, measured_saves=5)
    reference, durations = {0: _receive(conn, args.timeout)[2]}, []
    while (message := _receive(conn, args.timeout))[0] != "done":
        kind, step, value = message
        if kind == "saving":
            reference[step] = value
        else:
            durations.append(value)
    process.join(args.timeout)
    save_seconds = statistics.median(durations)

    directory = os.path.join(args.directory, "killed")
    failures, trials, restored_steps, kill_delays = [], [], [], []
    mid_write = unsealed = 0
    previous_committed = None
    for trial in range(args.trials + 1):
        last = trial == args.trials
        expected_step = previous_committed[-1] if previous_committed else 0
        # The last run trains 5 steps past its restored one (not to the reference's end), saving each.
        end = min(expected_step + 5, steps) if last else steps
        process, conn = _start(ctx, directory, end)
        kind, step, digest = _receive(conn, args.timeout)
        restored_steps.append(step)
        if step != expected_step:
            failures.append(f"trial {trial}: restored step {step}, the newest committed was {expected_step}")
        elif digest != reference.get(step):
            failures.append(f"trial {trial}: step {step} restored with a state that differs from the reference")
        if last:
            while (message := _receive(conn, args.timeout))[0] != "done":
                pass
            if message[1] != end or message[2] != reference.get(end):
                failures.append(f"the final run ended at step {message[1]} on a state unlike the reference's")
            process.join(args.timeout)
            break
        # Kill after a random save of the next few began, at a random moment within a save's duration.
        saves = draw.randint(1, 3)
        for _ in range(saves):
            while _receive(conn, args.timeout)[0] != "saving":
                pass
        delay = draw.uniform(0.0, 1.5 * save_seconds)
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.join(args.timeout)
        kill_delays.append(delay)
        previous_committed = committed_steps(directory)
        trials.append(trial)
        left = os.listdir(directory)
        mid_write += any("tmp" in name for name in left)  # killed before orbax renamed the step into place
        unsealed += not os.path.exists(os.path.join(directory, str(previous_committed[-1]), ckpt.CHECKSUMS_FILE))

    summary = {
        "trials": len(trials), "failures": failures, "restored_steps": restored_steps,
        "median_save_seconds": round(save_seconds, 4), "kill_delay_range": [round(min(kill_delays), 4), round(max(kill_delays), 4)],
        "killed_mid_write": mid_write, "killed_before_sealing": unsealed,
        "set_aside": sorted(name for name in os.listdir(directory) if not name.isdigit()),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    print(json.dumps(summary), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
