"""Evaluation: teacher-forced loss/accuracy and inference evaluation through `seqio.Evaluator`.

Inference evaluation decodes each task's split, postprocesses with the task's postprocessor and
scores with its RDKit metric functions; `seqio.JSONLogger` writes `inference_eval/<task>-<step>.jsonl`
(inputs, targets, predictions) and `<task>-metrics.jsonl`, the T5X layout, and TensorBoard gets the
scalars. `textchem-eval` runs it on a checkpoint (`CHECKPOINT_PATH`) into `EVAL_OUTPUT_DIR`.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

logger = logging.getLogger("textchem_jax.evaluate")
DecodeFn = Callable[..., Any]


def replicated_batch(mesh, rows: np.ndarray) -> jax.Array:
    """A global array, split over `data`, from a batch every host holds in full (eval data)."""
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    return jax.make_array_from_callback(rows.shape, sharding, lambda index: rows[index])


def gather(array: jax.Array) -> np.ndarray:
    """The whole array on every host."""
    if jax.process_count() == 1:
        return np.asarray(array)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def _pad_rows(rows: np.ndarray, multiple: int) -> np.ndarray:
    missing = -len(rows) % multiple
    return np.concatenate([rows, np.zeros((missing, *rows.shape[1:]), rows.dtype)]) if missing else rows


def make_batch_decoder(model, params, mesh, decode_fn: DecodeFn, max_decode_length: int):
    """`decode(tokens, domains) -> (sequences (batch, k, length), scores (batch, k) or None)` on host arrays.

    Jitted once; each batch is padded to a multiple of the `data` axis, split over the mesh (every host
    holds it in full) and gathered back. `domains` route e2-CLM models; T5 ignores them.
    """
    from textchem_jax.trainer import reads_input_domain

    routed = reads_input_domain(model)
    multiple = max(mesh.shape["data"], 1)

    @jax.jit
    def decode_on_mesh(params, tokens, domains):
        extra = {"input_domain": domains} if routed else {}
        return decode_fn(model, params, tokens, max_decode_length=max_decode_length, **extra)

    def decode(tokens: np.ndarray, domains: np.ndarray):
        with jax.set_mesh(mesh):
            output = decode_on_mesh(
                params,
                replicated_batch(mesh, _pad_rows(tokens, multiple)),
                replicated_batch(mesh, _pad_rows(domains, multiple)),
            )
        sequences, scores = output if isinstance(output, tuple) else (output[:, None, :], None)
        sequences = gather(sequences)[: len(tokens)]
        return sequences, None if scores is None else gather(scores)[: len(tokens)]

    return decode


def make_predict_fn(model, params, mesh, decode_fn: DecodeFn, batch_size: int, max_decode_length: int):
    """A seqio `predict_fn`: enumerated model-feature dataset -> [(index, token ids of the best output)]."""
    decode = make_batch_decoder(model, params, mesh, decode_fn, max_decode_length)

    def predict_fn(dataset) -> list[tuple[int, list[int]]]:
        results = []
        for indices, features in dataset.batch(batch_size).as_numpy_iterator():
            sequences, _ = decode(features["encoder_input_tokens"], features["input_domain"])
            results += [(int(i), [int(t) for t in row[0]]) for i, row in zip(indices, sequences)]
        return results

    return predict_fn


def greedy(model, params, encoder_input_tokens, *, max_decode_length: int, **options):
    """Default decode function; gin can swap in `textchem_jax.models.generate.decode` with beams."""
    from textchem_jax.models.generate import decode

    return decode(model, params, encoder_input_tokens, method="greedy", max_decode_length=max_decode_length, **options)


class InferenceEvaluator:
    """seqio.Evaluator of a mixture's split, reused across evaluations of one run."""

    def __init__(
        self,
        mixture_or_task_name: str,
        output_dir: str,
        task_feature_lengths: Mapping[str, int],
        split: str = "validation",
        num_examples: int | None = None,
    ):
        import seqio
        import tensorflow as tf

        from textchem_jax.data.feature_converters import domain_feature_converter

        tf.io.gfile.makedirs(output_dir)  # seqio's loggers expect it
        self.evaluator = seqio.Evaluator(
            mixture_or_task_name,
            feature_converter=domain_feature_converter(pack=False),  # keeps the tasks' `input_domain`
            eval_split=split,
            sequence_length={**task_feature_lengths, "input_domain": task_feature_lengths["inputs"]},
            num_examples=num_examples,
            logger_cls=(seqio.JSONLogger, seqio.TensorBoardLogger),
            log_dir=output_dir,
        )
        self.max_decode_length = int(task_feature_lengths["targets"])

    def evaluate(self, model, params, mesh, step: int, *, decode_fn: DecodeFn = greedy, batch_size: int = 32):
        """{task: {metric: value}} for `params` at `step` (also written to the loggers)."""
        predict_fn = make_predict_fn(model, params, mesh, decode_fn, batch_size, self.max_decode_length)
        all_metrics, _ = self.evaluator.evaluate(compute_metrics=jax.process_index() == 0, step=step, predict_fn=predict_fn)
        results = all_metrics.result() if hasattr(all_metrics, "result") else all_metrics
        return {
            task: {name: getattr(value, "value", value) for name, value in metrics.items()}
            for task, metrics in (results or {}).items()
        }


def teacher_forced(trainer, params, batches, num_batches: int) -> dict[str, float]:
    """Loss and token accuracy over `num_batches` batches, weighted by their tokens."""
    totals: dict[str, float] = {}
    for _ in range(num_batches):
        try:
            batch = next(batches)
        except StopIteration:
            break
        metrics = jax.device_get(trainer.eval_step(params, trainer.shard_batch(batch)))
        tokens = float(metrics["num_tokens"])
        for key in ("loss", "accuracy", "cross_entropy"):
            totals[key] = totals.get(key, 0.0) + float(metrics[key]) * tokens
        totals["num_tokens"] = totals.get("num_tokens", 0.0) + tokens
    tokens = max(totals.get("num_tokens", 0.0), 1.0)
    return {key: value / tokens for key, value in totals.items() if key != "num_tokens"}


def format_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """A per-task metric table for the console."""
    lines = []
    for task, metrics in sorted(results.items()):
        lines.append(task)
        for name, value in metrics.items():
            shown = "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
            lines.append(f"  {name:<26}{shown}")
    return "\n".join(lines)


def evaluate(
    *,
    model,
    checkpoint_path: str,
    mixture_or_task_name: str,
    task_feature_lengths: Mapping[str, int],
    output_dir: str,
    split: str = "validation",
    num_examples: int | None = None,
    batch_size: int = 32,
    decode_fn: DecodeFn = greedy,
    num_partitions: int = 1,
    mixture_or_task_module: str | None = None,
) -> dict:
    """`textchem-eval`: inference metrics of a checkpoint (ours, or a Hugging Face import) on a split."""
    from textchem_jax.data.seqio_tasks import import_task_module

    import_task_module(mixture_or_task_module)
    from textchem_jax import partitioning
    from textchem_jax.model_loading import load_for_inference

    mesh = partitioning.make_mesh(num_partitions)
    params = load_for_inference(model, checkpoint_path, mesh)
    evaluator = InferenceEvaluator(mixture_or_task_name, output_dir, task_feature_lengths, split, num_examples)
    results = evaluator.evaluate(model, params, mesh, step=0, decode_fn=decode_fn, batch_size=batch_size)
    print(format_table(results))
    print(f"predictions and metrics: {output_dir}")
    return results


def main() -> int:
    from textchem_jax import launch

    launch.run_configured("textchem_jax.evaluate.evaluate", "textchem-eval")
    return 0


if __name__ == "__main__":
    sys.exit(main())
