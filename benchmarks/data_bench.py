"""Throughput of the packed (512/512) SeqIO mixture pipeline: SeqIO's one-stream packing vs ours, on 1 core and all.

Two stages, each packed with the T5 adapter's feature converter (seqio's `EncDecFeatureConverter`) and batched:
the whole pipeline (read, prompt, tokenize, mix, pack), and packing alone on 20,000 pre-tokenized examples held in
memory (what reading a USE_CACHED_TASKS cache leaves to do). Two ways to pack:
- seqio: `converter(dataset)`, what SeqIO and T5X do: one packing stream, on one core whatever the host has;
- ours: `feature_converters.convert_in_parallel`: chunks of 1,024 examples packed at once on all cores (for the
  whole pipeline through `run_config.get_dataset`, the training path: AUTOTUNE maps, batches prefetched).
Each (way, stage, cores) runs in a fresh child process pinned to that many cores (TensorFlow's thread pools are
sized once per process) and reports packed rows/s, examples/s, (non-padding) tokens/s and examples per packed row.

The accelerator bound: the packed rows/s a T5-base (v1.0) bfloat16 train step on one H200 would consume, from the
analytic model FLOPs of the benchmark's own batches (`models.flops.train_step_flops`) over the H200's data-sheet
bf16 peak (`trainer.peak_flops`) at an assumed MFU (default 45%, the issue's goal): step time = FLOPs / (peak x
MFU), rows/s = batch size / step time. A pipeline slower than that would keep the H200 waiting (data-bound). An
H200 host has many cores per GPU (16 on the one lent here); the per-core figures say how many it takes.
Then our T5-small (v1.0) train step on this machine's cores (`--no_train_step` skips it): how many times faster
than training consumes the pipeline feeds.

Usage: python benchmarks/data_bench.py [--mixture=textchem_demo] [--split=train] [--batches=200] [--mfu=0.45]
       TEXTCHEM_DATA_DIR=../shared/data python benchmarks/data_bench.py --mixture=textchem_standard --split=validation
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from rss import peak_rss_mib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ALL_CORES = sorted(os.sched_getaffinity(0))
LENGTHS = {"inputs": 512, "targets": 512}


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


def examples(mixture: str, split: str, pretokenized: int = 0):
    """The mixture's tokenized examples (the SeqIO task pipeline); with `pretokenized`, that many of them held in
    memory and repeated, as reading a cache (USE_CACHED_TASKS) gives them: packing alone."""
    import seqio

    from textchem_jax.run_config import import_task_module

    import_task_module(None)
    ds = seqio.get_mixture_or_task(mixture).get_dataset(LENGTHS, split=split, shuffle=True, seed=0, num_epochs=None)
    if not pretokenized:
        return ds
    ds = ds.take(pretokenized).cache()
    for _ in ds.ragged_batch(4096):  # fill the cache before timing
        pass
    return ds.repeat()


def pipeline(packing: str, stage: str, mixture: str, split: str, batch_size: int):
    """Batches of packed rows, packed SeqIO's way (one stream) or ours (`convert_in_parallel`; the whole
    pipeline through `run_config.get_dataset`, the training path)."""
    import tensorflow as tf

    from textchem_jax.models.feature_converters import convert_in_parallel
    from textchem_jax.run_config import DatasetConfig, get_dataset

    model = t5_small()
    if packing == "ours" and stage == "pipeline":
        return get_dataset(DatasetConfig(mixture, LENGTHS, split, batch_size, shuffle=True, seed=0), model, num_epochs=None)
    ds = examples(mixture, split, pretokenized=20_000 if stage == "packing" else 0)
    converter = model.feature_converter(True)
    rows = convert_in_parallel(converter, ds, LENGTHS) if packing == "ours" else converter(ds, LENGTHS)
    return rows.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def measure(packing: str, stage: str, cores: int, args) -> dict:
    """In this (child) process, pinned to `cores` cores: the pipeline's rate over `args.batches` batches."""
    os.sched_setaffinity(0, ALL_CORES[:cores])
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(cores)
    tf.config.threading.set_intra_op_parallelism_threads(cores)
    batches = pipeline(packing, stage, args.mixture, args.split, args.batch_size).as_numpy_iterator()
    next(batches)  # build the pipeline, read and tokenize the files, fill buffers
    examples = tokens = 0
    seen = []
    start = time.perf_counter()
    for _ in range(args.batches):
        batch = next(batches)
        seen.append({key: batch[key] for key in ("encoder_segment_ids", "decoder_segment_ids", "encoder_input_tokens",
                                                  "decoder_target_tokens")})  # fmt: skip
        examples += int(sum(len(set(row[row > 0])) for row in batch["encoder_segment_ids"]))
        tokens += int((batch["encoder_input_tokens"] > 0).sum() + (batch["decoder_target_tokens"] > 0).sum())
    seconds = time.perf_counter() - start
    result = {"rows/s": args.batches * args.batch_size / seconds, "examples/s": examples / seconds,
              "tokens/s": tokens / seconds, "examples/row": examples / (args.batches * args.batch_size),
              "peak_rss_mib": peak_rss_mib()}  # fmt: skip
    if packing == "ours" and stage == "pipeline" and cores == len(ALL_CORES):
        result["h200_step_s"], result["counted"] = accelerator_bound(seen, args.mfu)
    return result


def in_child(packing: str, stage: str, cores: int, argv: list[str]) -> dict:
    command = [sys.executable, __file__, *argv, f"--child={packing},{stage},{cores}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"{packing} {stage} on {cores} core(s) failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


STAGES = {"pipeline": "the whole pipeline (read, prompt, tokenize, mix, pack)",
          "packing": "packing alone (20,000 pre-tokenized examples in memory, as from USE_CACHED_TASKS)"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mixture", default="textchem_demo")
    parser.add_argument("--split", default="train")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--no_train_step", action="store_true")
    parser.add_argument("--mfu", type=float, default=0.45, help="assumed MFU of the H200 train step (the bound)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        packing, stage, cores = args.child.split(",")
        print(json.dumps(measure(packing, stage, int(cores), args)))
        return

    from textchem_jax import provenance

    print(provenance.versions_line())
    argv = [arg for arg in sys.argv[1:] if not arg.startswith("--no_train_step")]
    core_counts = sorted({1, len(ALL_CORES)})
    print(f"{args.mixture} ({args.split}), packed 512/512, batch {args.batch_size}, {args.batches} batches per run")
    results = {}
    for stage, title in STAGES.items():
        print(f"  {title}:")
        print(f"    {'packing':<8}{'cores':>6}{'rows/s':>10}{'examples/s':>12}{'tokens/s':>12}{'ex/row':>8}{'peak RSS':>11}")
        for cores in core_counts:
            for packing in ("seqio", "ours"):
                r = results[packing, stage, cores] = in_child(packing, stage, cores, argv)
                print(f"    {packing:<8}{cores:>6}{r['rows/s']:>10.1f}{r['examples/s']:>12.0f}{r['tokens/s']:>12.0f}"
                      f"{r['examples/row']:>8.2f}{r['peak_rss_mib']:>7.0f} MiB", flush=True)  # fmt: skip
        for cores in core_counts:
            ratio = results["ours", stage, cores]["rows/s"] / results["seqio", stage, cores]["rows/s"]
            print(f"    ours / seqio on {cores} core(s): {ratio:.2f}x")
        if len(core_counts) > 1:
            scaling = {p: results[p, stage, core_counts[-1]]["rows/s"] / results[p, stage, 1]["rows/s"] for p in ("seqio", "ours")}
            print(f"    {core_counts[-1]} cores / 1 core: seqio {scaling['seqio']:.2f}x, ours {scaling['ours']:.2f}x")
    ours = results["ours", "pipeline", len(ALL_CORES)]
    bound = args.batch_size / ours["h200_step_s"]
    per_core = ours["rows/s"] / len(ALL_CORES)
    print(f"  accelerator bound, assuming {args.mfu:.0%} MFU: a T5-base v1.0 bf16 train step on one H200 "
          f"({ours['counted']}) takes {ours['h200_step_s'] * 1000:.1f} ms -> consumes {bound:.1f} packed rows/s")
    verdict = "accelerator-bound" if ours["rows/s"] >= bound else "data-bound (the H200 would wait)"
    print(f"  whole pipeline, ours on {len(ALL_CORES)} core(s) / bound: {ours['rows/s']:.1f} / {bound:.1f} = "
          f"{ours['rows/s'] / bound:.2f}x -> {verdict}; {per_core:.1f} rows/s per core: {bound / per_core:.1f} cores "
          f"keep up if it scales")  # fmt: skip
    if not args.no_train_step:
        from textchem_jax import launch

        launch.quiet_libraries()  # the pipeline is read in this process here: TensorFlow's and seqio's lines off
        step_seconds = train_step_seconds(pipeline("ours", "pipeline", args.mixture, args.split, args.batch_size).as_numpy_iterator())
        ratio = ours["rows/s"] / (args.batch_size / step_seconds)
        print(f"  T5-small train step on this machine: {step_seconds * 1000:.0f} ms -> the pipeline feeds {ratio:.0f}x "
              f"what training consumes (target 10x)")


def train_step_seconds(batches, steps: int = 2) -> float:
    """Mean time of our jitted T5-small train step on the pipeline's own batches (all cores)."""
    import jax
    import optax

    from textchem_jax import partitioning, trainer

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
