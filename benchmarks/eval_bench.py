"""Seconds of one in-training inference evaluation of ChEBI-20 test (text2mol and mol2text, 3,300 examples each):
T5X's way (before) against ours (after), in one process on the same tiny T5, alternating.

- before: what T5X does and what we did until now: one `seqio.Evaluator` over the mixture, built anew for the
  evaluation (T5X's `infer_eval` builds it once, but our training used to rebuild it each time); each task decoded
  in its own batches (its last, shorter batch compiles a second shape), then every task scored on SeqIO's metric
  thread after all are decoded, the caller waiting for it.
- after: the run's one `InferenceEvaluator` (`textchem_jax.evaluator`), reused: one SeqIO evaluator per task,
  decoding batched across the mixture's tasks (one compiled shape), each task scored on its own thread as soon
  as it is decoded, while the next one decodes.

Both decode greedily with the same jitted `make_batch_decoder` at the training configs' feature lengths (512/512)
and infer_eval batch (32), random weights, the task vocabulary. A random model rarely emits EOS, so nearly every row
decodes all `--targets` steps (decode time is a worst case) and the metrics score garbage. The reused evaluator's
first evaluation is cold (process pool, molecule memo, imports, compilation); then the two ways alternate, so both
find the metric caches warm and the same machine load.

Wall time is split by wrapping the evaluators' constructors and decode functions (compilation counted from JAX's
compile events), the tasks' postprocessors and metric functions (`textchem_jax.metrics`, wrapped before the tasks
register) and seqio's loggers. After, scoring runs beside decoding, so the parts add up to more than the total;
"scoring tail" is the wall time from the end of the last decode to the evaluation's return: the scoring that
decoding did not hide. On 2 CPU cores the whole split decodes at ~3.3 s per batch of 32 (512/512), ~11 min per
evaluation: use `--num_examples` there (decoding scales with it; `--targets=16` keeps the whole split and
shortens decoding).

Usage: TEXTCHEM_DATA_DIR=../shared/data python benchmarks/eval_bench.py [--num_examples=N (per task; default all)]
       [--evaluations=2 (each way)] [--batch_size=32] [--inputs=512] [--targets=512]
"""

from __future__ import annotations

import argparse
import collections
import functools
import logging
import os
import pathlib
import sys
import tempfile
import time

from rss import largest_child_peak_rss_mib, peak_rss_mib

ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TEXTCHEM_DATA_DIR", str(ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT / "tests"))

MIXTURE = "textchem_cross"  # textchem_text2mol + textchem_mol2text: ChEBI-20 both ways
PARTS = ("build", "decode", "compile", "postprocess", "metrics", "loggers", "scoring tail")
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")  # fmt: skip


class Stopwatch:
    """Seconds spent inside wrapped functions, by part, and when the last decode ended; `lap()` returns and
    resets them."""

    def __init__(self):
        self.seconds = collections.defaultdict(float)
        self.last_decode_end = 0.0

    def timed(self, part: str, fn):
        @functools.wraps(fn)  # keeps the signature seqio inspects
        def wrapped(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                end = time.perf_counter()
                self.seconds[part] += end - start
                if part == "decode":
                    self.last_decode_end = end

        return wrapped

    def on_jax_event(self, event: str, duration: float, **_) -> None:
        if event in COMPILE_EVENTS:
            self.seconds["compile"] += duration

    def lap(self) -> dict[str, float]:
        laps, self.seconds = collections.defaultdict(float, self.seconds), collections.defaultdict(float)
        return laps


class SeqioMixtureEvaluator:
    """Before (T5X's way): one seqio.Evaluator over the mixture; `evaluate` decodes each task in its own batches,
    then SeqIO scores every task on its metric thread and the caller waits for the result."""

    def __init__(self, model, cfg, output_dir: str, mesh):
        import seqio

        from textchem_jax.evaluator import make_batch_decoder

        self.evaluator = seqio.Evaluator(
            cfg.mixture_or_task_name, feature_converter=model.feature_converter(pack=False), eval_split=cfg.split,
            sequence_length=dict(cfg.task_feature_lengths), num_examples=cfg.num_examples,
            logger_cls=(seqio.JSONLogger, seqio.TensorBoardLogger), log_dir=output_dir,
        )  # fmt: skip
        self.batch_size = cfg.batch_size
        # batch_size=1 pads nothing: each task's last, shorter batch compiles its own shape, as before.
        self.decode = make_batch_decoder(model, mesh, None, int(cfg.task_feature_lengths["targets"]), batch_size=1)

    def evaluate(self, params, step: int):
        def predict_fn(dataset):
            results = []
            for indices, features in dataset.batch(self.batch_size).as_numpy_iterator():
                sequences, _ = self.decode(params, features)
                results += [(int(i), row[0]) for i, row in zip(indices, sequences)]
            return results

        metrics, _ = self.evaluator.evaluate(compute_metrics=True, step=step, predict_fn=predict_fn)
        return metrics.result()


def instrument_metrics(stopwatch: Stopwatch) -> None:
    """Times the ChEBI-20 tasks' postprocessors and metric functions: wrapped where `seqio_tasks` looks them up
    when it registers the tasks, so this must run before `tasks` is imported."""
    from textchem_jax import metrics

    for name in ("smiles_postprocessor", "text_postprocessor"):
        setattr(metrics, name, stopwatch.timed("postprocess", getattr(metrics, name)))
    for name in ("text2mol_metrics", "mol2text_metrics"):
        setattr(metrics, name, stopwatch.timed("metrics", getattr(metrics, name)))


def instrument_loggers(stopwatch: Stopwatch) -> None:
    """Times seqio's JSONL and TensorBoard loggers (the evaluator's `logger_cls`)."""
    import seqio

    for logger in (seqio.JSONLogger, seqio.TensorBoardLogger):
        logger.__call__ = stopwatch.timed("loggers", logger.__call__)


def build_evaluator(cls, *, model, cfg, output_dir: str, stopwatch: Stopwatch):
    """An evaluator of `cls` (ours or SeqIO's mixture evaluator) with its construction and decoding timed."""
    from textchem_jax import partitioning

    evaluator = stopwatch.timed("build", cls)(model, cfg, output_dir, partitioning.make_mesh())
    evaluator.decode = stopwatch.timed("decode", evaluator.decode)
    return evaluator


def timed_parts(work, stopwatch: Stopwatch) -> dict[str, float]:
    """Seconds of `work()`: in total, inside each wrapped part, and after the last decode ended."""
    stopwatch.lap()
    start = stopwatch.last_decode_end = time.perf_counter()
    work()
    end = time.perf_counter()
    parts = stopwatch.lap()
    parts["total"] = end - start
    parts["scoring tail"] = end - stopwatch.last_decode_end if parts["decode"] else 0.0
    return parts


def measure(ours, before, params, evaluations: int, stopwatch: Stopwatch) -> list[tuple[str, dict[str, float]]]:
    """(label, seconds by part) of: building our evaluator and its cold first evaluation, building one SeqIO mixture
    evaluator to reuse and its first evaluation, then `evaluations` rounds of one evaluation by each of: ours reused
    (after), SeqIO's reused (T5X's `infer_eval`), a new SeqIO one (before: our training until the evaluator was
    kept), in turn so that a slower or busier minute of the machine falls on all three."""
    kept = {}
    rows = [("first: build ours", timed_parts(lambda: kept.setdefault("ours", ours()), stopwatch)),
            ("first: ours (cold)", timed_parts(lambda: kept["ours"].evaluate(params, 0), stopwatch)),
            ("first: build T5X's", timed_parts(lambda: kept.setdefault("t5x", before()), stopwatch)),
            ("first: T5X's", timed_parts(lambda: kept["t5x"].evaluate(params, 0), stopwatch))]  # fmt: skip
    for step in range(1, evaluations + 1):
        ways = {"after: ours, reused": lambda: kept["ours"].evaluate(params, step),
                "T5X's way, reused": lambda: kept["t5x"].evaluate(params, step),
                "before: T5X's way, built anew": lambda: before().evaluate(params, step)}  # fmt: skip
        rows += [(f"{label} {step}", timed_parts(work, stopwatch)) for label, work in ways.items()]
    return rows


def print_row(label: str, parts: dict[str, float]) -> None:
    total = parts["total"]
    print(f"  {label:<36}{total:8.1f}" + "".join(f"{parts[p]:9.1f} {parts[p] / total:4.0%}" for p in PARTS))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num_examples", type=int, default=None, help="per task (default: the whole split)")
    parser.add_argument("--evaluations", type=int, default=2, help="evaluations each way (0: the cold one only)")
    parser.add_argument("--mixture", default=MIXTURE, help="e.g. textchem_forward: USPTO-MIT test, 40,000 reactions")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--inputs", type=int, default=512)
    parser.add_argument("--targets", type=int, default=512)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # seqio's and our per-evaluation log lines: the figures are printed below
    from textchem_jax import launch, provenance, xla_cpu

    print(provenance.versions_line())

    xla_cpu.apply_cpu_flags()  # as our entry points do, before JAX starts
    launch.quiet_libraries()  # TensorFlow's start-up lines off (SeqIO loads it here)

    import flax.linen as nn
    import jax
    import numpy as np

    stopwatch = Stopwatch()
    jax.monitoring.register_event_duration_secs_listener(stopwatch.on_jax_event)
    instrument_metrics(stopwatch)
    instrument_loggers(stopwatch)
    from helpers import tiny_t5

    from textchem_jax.run_config import DatasetConfig

    model = tiny_t5()
    params = jax.device_put(jax.tree_util.tree_map(np.asarray, nn.meta.unbox(model.init(jax.random.key(0)))))
    lengths = {"inputs": args.inputs, "targets": args.targets}
    cfg = DatasetConfig(args.mixture, lengths, "test", args.batch_size, shuffle=False, pack=False,
                        num_examples=args.num_examples)  # fmt: skip
    with tempfile.TemporaryDirectory() as output_dir:
        from textchem_jax.evaluator import InferenceEvaluator

        build = functools.partial(build_evaluator, model=model, cfg=cfg, output_dir=output_dir, stopwatch=stopwatch)
        rows = measure(functools.partial(build, InferenceEvaluator), functools.partial(build, SeqioMixtureEvaluator),
                       params, args.evaluations, stopwatch)  # fmt: skip
        examples = count_examples(output_dir)

    print(f"test split of {args.mixture} ({examples}), tiny T5 v1.1 (random), greedy, {args.inputs}/{args.targets} "
          f"tokens, batch {args.batch_size}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
          f"{len(os.sched_getaffinity(0))} cores")  # fmt: skip
    print(f"  {'seconds (share of total)':<36}{'total':>8}" + "".join(f"{p:>14}" for p in PARTS))
    for label, parts in rows:
        print_row(label, parts)
    print("  (compile is part of decode; before, postprocess and metrics run after all tasks are decoded and the "
          "scoring tail holds them all; after, a task is scored while the next decodes)")  # fmt: skip
    if args.evaluations:
        compare(rows)
    own, workers = peak_rss_mib(), largest_child_peak_rss_mib()
    print(f"  peak RSS: {own:.0f} MiB this process, {workers:.0f} MiB the largest metric worker")


def compare(rows: list[tuple[str, dict[str, float]]]) -> None:
    import numpy as np

    median = lambda prefix, part: float(np.median([p[part] for label, p in rows if label.startswith(prefix)]))  # noqa: E731
    ours = median("after", "total")
    for prefix in ("before", "T5X's way, reused"):
        print(f"  {prefix}: {median(prefix, 'total'):.1f} s -> after (ours, reused): {ours:.1f} s per evaluation "
              f"(medians): {median(prefix, 'total') / ours:.2f}x")  # fmt: skip
    for part in ("build", "compile", "decode", "scoring tail"):
        print(f"    {part:<13} {median('before', part):7.1f} s before, {median('T5X', part):7.1f} s T5X's reused, "
              f"{median('after', part):7.1f} s after")  # fmt: skip


def count_examples(output_dir: str) -> str:
    """'text2mol 3300, mol2text 3300': rows the JSONL logger wrote for the last evaluation of each task."""
    counts = {}
    for path in sorted(pathlib.Path(output_dir).glob("textchem_*-*.jsonl")):
        if not path.name.endswith("-metrics.jsonl"):
            task = path.name.rsplit("-", 1)[0].removeprefix("textchem_")
            counts[task] = sum(1 for _ in path.open())
    return ", ".join(f"{task} {n}" for task, n in counts.items())


if __name__ == "__main__":
    main()
