"""Evaluation of a model adapter: teacher-forced loss/accuracy, and inference through `seqio.Evaluator`.

Inference evaluation decodes each task's split, postprocesses with the task's postprocessor and
scores with its RDKit metric functions; `seqio.JSONLogger` writes `inference_eval/<task>-<step>.jsonl`
(inputs, targets, predictions) and `<task>-metrics.jsonl`, the T5X layout, and TensorBoard gets the
scalars. Used by training (`train.py`), `textchem-eval` (`evaluate.py`) and `textchem-infer`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from textchem_jax.run_config import import_task_module

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


def make_batch_decoder(model, mesh, decode_fn: DecodeFn | None, max_decode_length: int):
    """`decode(params, features) -> (sequences (batch, k, length), scores (batch, k))` on host arrays.

    `model` is a model adapter; `features` holds `encoder_input_tokens` and whatever else the model
    reads (e2-CLM: `input_domain`). Jitted once per shape; each batch is padded to a multiple of the
    `data` axis, split over the mesh (every host holds it in full) and gathered back.
    """
    multiple = max(mesh.shape["data"], 1)

    @jax.jit
    def decode_on_mesh(params, features):
        return model.predict_batch(params, features, decode_fn=decode_fn, max_decode_length=max_decode_length)

    def decode(params, features: Mapping[str, np.ndarray]):
        inputs = model.features(features, model.input_features)
        size = len(inputs["encoder_input_tokens"])
        with jax.set_mesh(mesh):
            sequences, scores = decode_on_mesh(
                params, {key: replicated_batch(mesh, _pad_rows(value, multiple)) for key, value in inputs.items()}
            )
        return gather(sequences)[:size], gather(scores)[:size]

    return decode


class InferenceEvaluator:
    """seqio.Evaluator of a dataset config's split, made once per run and reused by every evaluation
    (datasets, cached targets and the compiled decoding)."""

    def __init__(self, model, cfg, output_dir: str, mesh, decode_fn: DecodeFn | None = None):
        import seqio
        import tensorflow as tf

        import_task_module(cfg.module, model)
        tf.io.gfile.makedirs(output_dir)  # seqio's loggers expect it
        self.evaluator = seqio.Evaluator(
            cfg.mixture_or_task_name,
            feature_converter=model.feature_converter(pack=False),
            eval_split=cfg.split,
            use_cached=cfg.use_cached,
            sequence_length=dict(cfg.task_feature_lengths),
            num_examples=cfg.num_examples,
            logger_cls=(seqio.JSONLogger, seqio.TensorBoardLogger),
            log_dir=output_dir,
        )
        self.batch_size = cfg.batch_size
        self.decode = make_batch_decoder(model, mesh, decode_fn, int(cfg.task_feature_lengths["targets"]))

    def evaluate(self, params, step: int):
        """{task: {metric: value}} for `params` at `step` (also written to the loggers)."""
        all_metrics, _ = self.evaluator.evaluate(
            compute_metrics=jax.process_index() == 0, step=step, predict_fn=self._predict_fn(params)
        )
        results = all_metrics.result() if hasattr(all_metrics, "result") else all_metrics
        return {
            task: {name: getattr(value, "value", value) for name, value in metrics.items()}
            for task, metrics in (results or {}).items()
        }

    def _predict_fn(self, params):
        """A seqio `predict_fn`: enumerated model-feature dataset -> [(index, token ids of the best output)]."""

        def predict_fn(dataset) -> list[tuple[int, list[int]]]:
            results = []
            for indices, features in dataset.batch(self.batch_size).as_numpy_iterator():
                sequences, _ = self.decode(params, features)
                results += [(int(i), [int(t) for t in row[0]]) for i, row in zip(indices, sequences)]
            return results

        return predict_fn


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
