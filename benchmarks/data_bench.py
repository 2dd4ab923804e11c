"""Throughput of the SeqIO mixture pipeline on one core: packed examples, lengths 512/512.

Reads the mixture through `run_config.get_dataset` (prompt, tokenize, mix, pack with the T5 adapter's
feature converter, seqio's `EncDecFeatureConverter`) and reports examples/s and (non-padding) tokens/s.
A training step consumes `batch_size` packed rows; the ratio printed is how many times faster than that
the pipeline feeds, against the measured step time of our jitted T5-small (v1.0, 32,128 vocabulary)
train step on the same batches, measured afterwards in this script on all cores (`--no_train_step` skips it).

It also prints the accelerator bound: the packed rows/s a T5-base (v1.0) bfloat16 train step on one H200 would
consume, from the analytic model FLOPs of the benchmark's own batches (`models.flops.train_step_flops`) over the
H200's data-sheet bf16 peak (`trainer.peak_flops`) at an assumed MFU (default 45%, the issue's goal):
step time = FLOPs / (peak x MFU), rows/s = batch size / step time. A pipeline slower than that bound would keep
the H200 waiting (data-bound); a faster one leaves the accelerator the bottleneck.

Usage: python benchmarks/data_bench.py [--mixture=textchem_demo] [--split=train] [--batches=200] [--mfu=0.45]
       TEXTCHEM_DATA_DIR=../shared/data python benchmarks/data_bench.py --mixture=textchem_standard --split=validation
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ALL_CORES = os.sched_getaffinity(0)


def t5_small():
    from textchem_jax.models.adapters import EncoderDecoderModel
    from textchem_jax.models.config import t5_config

    return EncoderDecoderModel(t5_config("small", "1.0", vocab_size=32128, dropout_rate=0.0))


def accelerator_bound(batches, mfu: float, chip: str = "H200") -> tuple[float, str]:
    """(seconds, how they were counted) of a T5-base bf16 train step on one `chip` at `mfu` on these packed
    batches: analytic model FLOPs (mean over the batches) / (data-sheet peak x mfu)."""
    import types

    import numpy as np

    from textchem_jax.models.config import t5_config
    from textchem_jax.models.flops import train_step_flops
    from textchem_jax.trainer import peak_flops

    config = t5_config("base", "1.0", vocab_size=32128, dropout_rate=0.0, dtype="bfloat16")
    step_flops = float(np.mean([train_step_flops(config, batch) for batch in batches]))
    peak, source = peak_flops("bfloat16", types.SimpleNamespace(device_kind=chip))  # the data-sheet table
    return step_flops / (peak * mfu), f"{step_flops / 1e12:.2f} TFLOP model FLOPs per step, {source}"


def pipeline(mixture: str, split: str, batch_size: int):
    import jax

    # get_dataset asks JAX for the process count, which starts its CPU backend: start it on all cores first,
    # or XLA's threads would inherit the one-core mask and the train step below would run on one core.
    jax.devices()
    os.sched_setaffinity(0, {min(ALL_CORES)})  # the pipeline: one core, as the issue asks
    import tensorflow as tf

    from textchem_jax.run_config import DatasetConfig, get_dataset

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    cfg = DatasetConfig(mixture, {"inputs": 512, "targets": 512}, split, batch_size, shuffle=True, seed=0, pack=True)
    return get_dataset(cfg, t5_small(), num_epochs=None).prefetch(2).as_numpy_iterator()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mixture", default="textchem_demo")
    parser.add_argument("--split", default="train")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--no_train_step", action="store_true")
    parser.add_argument("--mfu", type=float, default=0.45, help="assumed MFU of the H200 train step (the bound)")
    args = parser.parse_args()

    batches = pipeline(args.mixture, args.split, args.batch_size)
    next(batches)  # build the pipeline, read and tokenize the files, fill buffers
    examples = tokens = 0
    seen = []
    start = time.perf_counter()
    for _ in range(args.batches):
        batch = next(batches)
        seen.append(batch)
        examples += int(sum(len(set(row[row > 0])) for row in batch["encoder_segment_ids"]))
        tokens += int((batch["encoder_input_tokens"] > 0).sum() + (batch["decoder_target_tokens"] > 0).sum())
    seconds = time.perf_counter() - start
    rows_per_s = args.batches * args.batch_size / seconds
    print(f"{args.mixture} ({args.split}), packed 512/512, batch {args.batch_size}, 1 core:")
    print(f"  {examples / seconds:10.0f} examples/s   {tokens / seconds:12.0f} tokens/s   {rows_per_s:8.1f} packed rows/s")
    print(f"  {args.batches / seconds:10.1f} batches/s   ({examples / (args.batches * args.batch_size):.1f} examples per packed row)")
    print(f"  to feed 10x a train step of batch {args.batch_size}, a step must take at least "
          f"{10 * args.batch_size / rows_per_s * 1000:.1f} ms")
    h200_step_seconds, counted = accelerator_bound(seen, args.mfu)
    bound = args.batch_size / h200_step_seconds
    verdict = "data-bound (the pipeline would keep the H200 waiting)" if rows_per_s < bound else "accelerator-bound"
    print(f"  accelerator bound, assuming {args.mfu:.0%} MFU: a T5-base v1.0 bf16 train step on one H200 "
          f"({counted}) takes {h200_step_seconds * 1000:.1f} ms -> consumes {bound:.1f} packed rows/s")
    print(f"  pipeline / bound: {rows_per_s:.1f} / {bound:.1f} = {rows_per_s / bound:.2f}x -> {verdict}, "
          "fed by this one core")
    if not args.no_train_step:
        step_seconds = train_step_seconds(batches, args.batch_size)
        ratio = rows_per_s / (args.batch_size / step_seconds)
        print(f"  T5-small train step on this machine: {step_seconds * 1000:.0f} ms -> the pipeline feeds {ratio:.0f}x "
              f"what training consumes (target 10x)")


def train_step_seconds(batches, batch_size: int, steps: int = 2) -> float:
    """Mean time of our jitted T5-small train step on the pipeline's own batches (all cores)."""
    import jax
    import optax

    from textchem_jax import partitioning, trainer

    os.sched_setaffinity(0, ALL_CORES)
    adamw = optax.adamw(6e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0)
    run = trainer.Trainer(t5_small(), adamw, partitioning.make_mesh())
    first = next(batches)
    state = run.init_state(jax.random.key(0))
    state, metrics = run.train_step(state, run.shard_batch(first), jax.random.key(1))
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = run.train_step(state, run.shard_batch(next(batches)), jax.random.key(1))
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / steps


if __name__ == "__main__":
    main()
