"""Seconds of one in-training inference evaluation of ChEBI-20 test (text2mol and mol2text, 3,300 examples each):
a new `InferenceEvaluator` per evaluation (before) against the run's one evaluator reused (after).

Training used to build the evaluator, and so its seqio datasets, cached targets and jitted decoding, again at
every evaluation; it now builds one per run (`train._inference_evaluator`). This script runs the very path the
trainer runs (`InferenceEvaluator.evaluate`) both ways in one process on a tiny T5 (random weights, the task
vocabulary): greedy decoding, the training configs' feature lengths (512/512) and infer_eval batch (32). A random
model rarely emits EOS, so nearly every row decodes all `--targets` steps (decode time is a worst case) and the
metrics score garbage. The reused evaluator's first evaluation is cold (process pool, molecule memo, imports,
compilation); then reused and rebuilt evaluations alternate, so both find the metric caches warm and the same
machine load. Only building and compiling differ between the two; the summary line reports them directly.

Wall time is split by wrapping the evaluator's constructor, decode function (compilation counted from JAX's
compile events) and predict_fn (what it spends outside decoding is reading the cached datasets: "data"), the
tasks' postprocessors and metric functions (`textchem_jax.metrics`, wrapped before the tasks register) and
seqio's loggers; "other" is the rest of seqio's work (detokenizing, sorting). On 2 CPU cores the whole split decodes at ~3.3 s per batch of 32 (512/512), ~11 min per evaluation: use
`--num_examples` there (decoding scales with it; `--targets=16` keeps the whole split and shortens decoding).

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
import resource
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TEXTCHEM_DATA_DIR", str(ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT / "tests"))

MIXTURE = "textchem_cross"  # textchem_text2mol + textchem_mol2text: ChEBI-20 both ways
PARTS = ("build", "data", "decode", "compile", "postprocess", "metrics", "loggers")
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")  # fmt: skip


class Stopwatch:
    """Seconds spent inside wrapped functions, by part; `lap()` returns and resets them."""

    def __init__(self):
        self.seconds = collections.defaultdict(float)

    def timed(self, part: str, fn):
        @functools.wraps(fn)  # keeps the signature seqio inspects
        def wrapped(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - start

        return wrapped

    def on_jax_event(self, event: str, duration: float, **_) -> None:
        if event in COMPILE_EVENTS:
            self.seconds["compile"] += duration

    def lap(self) -> dict[str, float]:
        laps, self.seconds = collections.defaultdict(float, self.seconds), collections.defaultdict(float)
        laps["data"] = laps.pop("predict", 0.0) - laps["decode"]
        return laps


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


def build_evaluator(model, cfg, output_dir: str, stopwatch: Stopwatch):
    """The trainer's evaluator with its decode timed, and its predict_fn: what that spends outside decoding is
    reading the cached model datasets (tf.data), "data"."""
    from textchem_jax import partitioning
    from textchem_jax.evaluator import InferenceEvaluator

    evaluator = stopwatch.timed("build", InferenceEvaluator)(model, cfg, output_dir, partitioning.make_mesh())
    evaluator.decode = stopwatch.timed("decode", evaluator.decode)
    predict_fn = evaluator._predict_fn
    evaluator._predict_fn = lambda params: stopwatch.timed("predict", predict_fn(params))
    return evaluator


def timed_parts(work, stopwatch: Stopwatch) -> dict[str, float]:
    """Seconds of `work()`: in total and inside each wrapped part."""
    stopwatch.lap()
    start = time.perf_counter()
    work()
    parts = stopwatch.lap()
    parts["total"] = time.perf_counter() - start
    return parts


def measure(build, params, evaluations: int, stopwatch: Stopwatch) -> list[tuple[str, dict[str, float]]]:
    """(label, seconds by part) of: building the reused evaluator, its cold first evaluation, then `evaluations`
    rounds of one reused evaluation (after) and one by a new evaluator (before), alternating so that a slower or
    busier minute of the machine falls on both."""
    reused = []
    rows = [("first: build", timed_parts(lambda: reused.append(build()), stopwatch)),
            ("first: evaluation (cold)", timed_parts(lambda: reused[0].evaluate(params, 0), stopwatch))]  # fmt: skip
    for step in range(1, evaluations + 1):
        reuse, rebuild = (lambda: reused[0].evaluate(params, step)), (lambda: build().evaluate(params, step))
        rows.append((f"after: reused, evaluation {step}", timed_parts(reuse, stopwatch)))
        rows.append((f"before: new one, evaluation {step}", timed_parts(rebuild, stopwatch)))
    return rows


def print_row(label: str, parts: dict[str, float]) -> None:
    total = parts["total"]
    shares = "".join(f"{parts[p]:8.1f} {parts[p] / total:4.0%}" for p in PARTS)
    other = total - sum(parts[p] for p in PARTS if p != "compile")
    print(f"  {label:<30}{total:8.1f}{shares}{other:8.1f} {other / total:4.0%}")


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
        rows = measure(functools.partial(build_evaluator, model, cfg, output_dir, stopwatch), params, args.evaluations,
                       stopwatch)  # fmt: skip
        examples = count_examples(output_dir)

    print(f"test split of {args.mixture} ({examples}), tiny T5 v1.1 (random), greedy, {args.inputs}/{args.targets} "
          f"tokens, batch {args.batch_size}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
          f"{len(os.sched_getaffinity(0))} cores")  # fmt: skip
    print(f"  {'seconds (share of total)':<30}{'total':>8}" + "".join(f"{p:>13}" for p in PARTS) + f"{'other':>13}")
    for label, parts in rows:
        print_row(label, parts)
    print("  (compile is part of decode; postprocess and metrics run on SeqIO's metric thread after all tasks are "
          "decoded, and evaluate waits for them: no overlap with decoding)")  # fmt: skip
    before = [parts for label, parts in rows if label.startswith("before")]
    after = [parts for label, parts in rows if label.startswith("after")]
    if before and after:
        compare(before, after)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"  peak RSS: {own:.0f} MiB this process, {workers:.0f} MiB the largest metric worker")


def compare(before: list[dict[str, float]], after: list[dict[str, float]]) -> None:
    import numpy as np

    total = lambda rows: float(np.median([parts["total"] for parts in rows]))  # noqa: E731
    print(f"  before (new evaluator each evaluation) {total(before):.1f} s -> after (one evaluator reused) "
          f"{total(after):.1f} s per evaluation (medians): {total(before) / total(after):.2f}x")  # fmt: skip
    setup = lambda rows: float(np.mean([parts["build"] + parts["compile"] for parts in rows]))  # noqa: E731
    print(f"  work only a new evaluator does (build: datasets read, tokenized and cached; compile: decoding jitted "
          f"again): {setup(before):.1f} s per evaluation before, {setup(after):.1f} s after; everything else is the "
          "same code, so differences beyond it are this machine's noise")  # fmt: skip


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
