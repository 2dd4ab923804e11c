"""How long a checkpoint save holds up training: sealing in the step (before) vs on a thread of its own (ours).

The state is a T5 (v1.0) train state with AdamW, as `textchem-train` saves it (small: 60.5M parameters, 0.73 GB
with the optimizer's two moments). Each mode saves `--saves` times, with `--between` seconds of "training"
between two saves: a sleep, as on an accelerator host whose CPU waits while the device computes. What is timed
is the main thread's time inside the save call, i.e. what training waits for:
- before: `wait()` then `save()`, what every save did until sealing moved off the main thread: finish orbax's
  previous (asynchronous) save, then read that step back to write its SHA-256 checksums, then start the save;
- ours: `save()`, which finishes orbax's previous save and leaves its sealing to a background thread.
The first save of each mode has nothing to finish and is left out. Also printed: one seal of a saved step alone
(what the first mode adds to each save) and the final `wait()`.

`--directory` may be `gs://bucket/folder` (the state is written and read back through the bucket, where sealing
costs most); the default is a fresh local temporary folder.

Usage: python benchmarks/checkpoint_bench.py [--size small] [--saves 4] [--between 5] [--directory DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from rss import peak_rss_mib
from train_bench import Setup


def train_state(size: str):
    import jax
    import optax

    from textchem_jax import partitioning, trainer
    from textchem_jax.models.adapters import EncoderDecoderModel

    model = EncoderDecoderModel(Setup(size=size).config())  # the T5 v1.0 the train bench trains
    built = trainer.Trainer(model, optax.adamw(1e-3), partitioning.make_mesh())
    return built.init_state(jax.random.key(0))


def blocked_seconds(directory: str, state, saves: int, between: float, seal_first: bool) -> tuple[list[float], float]:
    """Seconds each save (but the first) held the main thread, and the final wait's."""
    from textchem_jax import checkpoints as ckpt

    checkpoints = ckpt.Checkpoints(directory, keep=2)
    blocked = []
    for step in range(1, saves + 1):
        start = time.perf_counter()
        if seal_first:
            checkpoints.wait()
        checkpoints.save(step, state)
        blocked.append(time.perf_counter() - start)
        time.sleep(between)
    start = time.perf_counter()
    checkpoints.close()
    return blocked[1:], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="small")
    parser.add_argument("--saves", type=int, default=4)
    parser.add_argument("--between", type=float, default=5.0, help="seconds of simulated training between saves")
    parser.add_argument("--directory", help="where to save (default: a fresh local temporary folder); gs:// works")
    args = parser.parse_args()

    import jax
    from etils import epath

    from textchem_jax import checkpoints as ckpt
    from textchem_jax import provenance

    state = train_state(args.size)
    gigabytes = sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(state)) / 1e9
    root = args.directory or tempfile.mkdtemp(prefix="checkpoint-bench-")
    print(f"T5-{args.size} train state, {gigabytes:.2f} GB; {args.saves} saves {args.between:g} s apart, in {root}")
    print(provenance.versions_line())
    rows = {}
    for mode, seal_first in (("before: sealed in the save", True), ("ours: sealed beside training", False)):
        directory = f"{root}/{'before' if seal_first else 'ours'}"
        rows[mode] = blocked_seconds(directory, state, args.saves, args.between, seal_first)
        if seal_first:
            step_dir = epath.Path(directory) / str(args.saves)
            start = time.perf_counter()
            ckpt.seal(step_dir)
            seal_seconds = time.perf_counter() - start
    print(f"\n{'':32}{'median s/save':>14}{'max s/save':>12}{'final wait s':>14}")
    for mode, (blocked, final) in rows.items():
        print(f"{mode:32}{statistics.median(blocked):14.2f}{max(blocked):12.2f}{final:14.2f}")
    before, ours = (statistics.median(blocked) for blocked, _ in rows.values())
    print(f"\none seal alone: {seal_seconds:.2f} s; a save holds training {before - ours:.2f} s less "
          f"({before / max(ours, 1e-9):.1f}x); peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
