"""Evaluation of a model adapter: teacher-forced loss/accuracy, and inference through `seqio.Evaluator`.

Inference evaluation decodes each task's split, postprocesses with the task's postprocessor and
scores with its RDKit metric functions, as the paper reports them: every beam reaches the metrics
(top-k accuracy when the decode function returns k > 1), retrosynthesis round-trip accuracy uses the
model under evaluation as the forward predictor, and a SciBERT tokenizer folder, when given, tokenizes
captions for BLEU/METEOR; `seqio.JSONLogger` writes `inference_eval/<task>-<step>.jsonl`
(inputs, targets, predictions) and `<task>-metrics.jsonl`, the T5X layout, and TensorBoard gets the
scalars. Used by training (`train.py`), `textchem-eval` (`evaluate.py`) and `textchem-infer`.
"""

from __future__ import annotations

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

    def __init__(
        self, model, cfg, output_dir: str, mesh, decode_fn: DecodeFn | None = None, caption_tokenizer: str | None = None
    ):
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
        self.input_length = int(cfg.task_feature_lengths["inputs"])
        self.caption_tokenizer = caption_tokenizer
        self._round_trip: dict[str, str] = {}
        self.decode = make_batch_decoder(model, mesh, decode_fn, int(cfg.task_feature_lengths["targets"]))

    def evaluate(self, params, step: int):
        """{task: {metric: value}} for `params` at `step` (also written to the loggers)."""
        from textchem_jax.metrics import metric_settings

        self._round_trip = {}  # retrosynthesis top-1 precursors -> the model's forward prediction
        with metric_settings(forward_fn=self._forward_from_round_trip, caption_tokenizer=self.caption_tokenizer):
            all_metrics, _ = self.evaluator.evaluate(
                compute_metrics=jax.process_index() == 0, step=step, predict_fn=self._predict_fn(params)
            )
            results = all_metrics.result() if hasattr(all_metrics, "result") else all_metrics
        return {
            task: {name: getattr(value, "value", value) for name, value in metrics.items()}
            for task, metrics in (results or {}).items()
        }

    def _predict_fn(self, params):
        """A seqio `predict_fn`: enumerated model-feature dataset -> [(index, token ids)], the best output's,
        or every beam's (k, length) when the decode function returns k > 1 (SeqIO then hands the metrics
        lists of beams, best first: top-k accuracy). For a retrosynthesis task it also runs the model
        forward on its top-1 precursors, on every host (metrics are computed on the first one only)."""
        from textchem_jax.data import seqio_tasks

        def predict_fn(dataset) -> list[tuple[int, np.ndarray]]:
            results = []
            for indices, features in dataset.batch(self.batch_size).as_numpy_iterator():
                sequences, _ = self.decode(params, features)
                results += [(int(i), row if len(row) > 1 else row[0]) for i, row in zip(indices, sequences)]
            task = self._task_of(dataset)
            spec = seqio_tasks.SPECS.get(task.name) if task is not None else None
            if spec is not None and spec.task == "retro":
                vocab = task.output_features["targets"].vocabulary
                best = [row if row.ndim == 1 else row[0] for _, row in results]
                precursors = list(dict.fromkeys(task.postprocess_fn(vocab.decode(row.tolist())) for row in best))
                self._round_trip.update(zip(precursors, self.forward_predictor(params)(precursors)))
            return results

        return predict_fn

    def _task_of(self, dataset):
        """The task whose cached dataset SeqIO hands to `predict_fn` (it passes that very object)."""
        import seqio

        for name, cached in self.evaluator.cached_model_datasets.items():
            if cached is dataset:
                return seqio.get_mixture_or_task(name)
        return None

    def _forward_from_round_trip(self, precursors: list[str]) -> list[str]:
        return [self._round_trip[p] for p in precursors]

    def forward_predictor(self, params):
        """`precursors -> products` by the model under evaluation, batched on the mesh: the forward model of
        the retrosynthesis round trip (the paper's multi-task model is its own forward predictor)."""
        from textchem_jax.catalogue import PROMPTS, task_input_domain
        from textchem_jax.data import seqio_tasks
        from textchem_jax.metrics import smiles_postprocessor

        vocab = seqio_tasks.vocabulary()
        domain = task_input_domain("forward")

        def forward(precursors: list[str]) -> list[str]:
            products = []
            for start in range(0, len(precursors), self.batch_size):
                chunk = precursors[start : start + self.batch_size]
                tokens = np.zeros((len(chunk), self.input_length), np.int32)
                for row, text in enumerate(chunk):
                    ids = [*vocab.encode(PROMPTS["forward"] + text)[: self.input_length - 1], vocab.eos_id]
                    tokens[row, : len(ids)] = ids
                batch = {"encoder_input_tokens": tokens, "input_domain": np.full_like(tokens, domain)}
                sequences, _ = self.decode(params, batch)
                products += [smiles_postprocessor(vocab.decode([int(t) for t in row[0]])) for row in sequences]
            return products

        return forward


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
