"""Evaluation of a model adapter: teacher-forced loss/accuracy, and inference through `seqio.Evaluator`.

Inference evaluation decodes each task's split, postprocesses with the task's postprocessor and
scores with its RDKit metric functions, as the paper reports them: every beam reaches the metrics
(top-k accuracy when the decode function returns k > 1), retrosynthesis round-trip accuracy uses the
model under evaluation as the forward predictor, and a SciBERT tokenizer folder, when given, tokenizes
captions for BLEU/METEOR; `seqio.JSONLogger` writes `inference_eval/<task>-<step>.jsonl`
(inputs, targets, predictions) and `<task>-metrics.jsonl`, the T5X layout (a metric that is n/a written as
`null`, not as JSON-breaking NaN), and TensorBoard gets the scalars. Used by training (`train.py`), `textchem-eval` (`evaluate.py`) and `textchem-infer`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from textchem_jax import xla_cpu
from textchem_jax.chem.notations import ORIGINAL
from textchem_jax.paths import makedirs
from textchem_jax.progress import ProgressLine
from textchem_jax.run_config import check_metric_fns, checked_provider, import_task_module, mixture_or_task

DecodeFn = Callable[..., Any]
logger = logging.getLogger("textchem_jax.evaluator")
LENGTH_SETTING = "TASK_FEATURE_LENGTHS['{feature}']"  # what raises a feature's length: the gin macro, or a flag


def _null_for_nan(value):
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _null_for_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_null_for_nan(item) for item in value]
    return value


def _json_logger(output_dir: str):
    """seqio's JSONLogger, writing a metric that is n/a (NaN: no valid molecule to compare) as null. Bare NaN is
    not JSON: `jq`, `JSON.parse` and browsers refused the whole metrics file."""
    import seqio
    from seqio.loggers import TensorAndNumpyEncoder

    class NullForNaN(TensorAndNumpyEncoder):
        def encode(self, o):
            return super().encode(_null_for_nan(o))

    return seqio.JSONLogger(output_dir, json_encoder_cls=NullForNaN)


def _unless_cut(logger_cls, cut: threading.Event):
    """`logger_cls`, as seqio builds it, writing nothing once `cut` is set: a task's metric thread still scoring
    when its evaluation was interrupted wrote its line after the interruption (and at its step, a rerun took it
    for the step's evaluation)."""

    def make(output_dir: str):
        logger = logger_cls(output_dir=output_dir)

        def log(**kwargs) -> None:
            if not cut.is_set():
                logger(**kwargs)

        return log

    return make


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


def encode_rows(vocab, texts, length: int) -> np.ndarray:
    """(len(texts), length) token ids, each row truncated to end in EOS within `length`, zero-padded. Tokenized as
    the tasks' examples are (`encode_as_tasks`): a user's vocabulary may tokenize otherwise in TensorFlow than in
    Python (seqio's own SentencePiece vocabulary did, on 87 of 1,000 USPTO forward inputs)."""
    from textchem_jax.data.vocabulary import encode_as_tasks

    rows = np.zeros((len(texts), length), np.int32)
    for row, encoded in enumerate(encode_as_tasks(vocab, list(texts))):
        ids = [*encoded[: length - 1], vocab.eos_id]
        rows[row, : len(ids)] = ids
    return rows


def make_batch_decoder(model, mesh, decode_fn: DecodeFn | None, max_decode_length: int, batch_size: int, seed: int | None = 0):
    """`decode(params, features, batch_index=0) -> (sequences (rows, k, length), scores (rows, k))` on host arrays.

    `model` is a model adapter; `features` holds `encoder_input_tokens` and whatever else the model
    reads (e2-CLM: `input_domain`). Every call runs padded to a multiple of `batch_size` (and of the `data`
    axis), so a last, shorter batch reuses the one compiled shape; split over the mesh (every host holds the
    batch in full) and gathered back, the padding rows dropped. Compiled with our decoders' XLA options
    (`xla_cpu.decode_compiler_options`). A sampling search draws from `fold_in(key(seed), batch_index)`:
    callers number their batches, so every batch gets fresh randomness and the same seed and batch order give
    the same outputs (one key for all batches made batches of equal inputs repeat each other). The seed and
    `decode_fn`'s options are checked here, before any checkpoint is loaded.
    """
    seed_key = decoding_seed_key(seed)
    if decode_fn is not None:
        _check_decoder(decode_fn, max_decode_length, batch_size)

    def predict(params, features, rng_data):
        rng = jax.random.wrap_key_data(rng_data)
        return model.predict_batch(params, features, decode_fn=decode_fn, max_decode_length=max_decode_length, rng=rng)

    decode_on_mesh = jax.jit(predict, compiler_options=xla_cpu.decode_compiler_options(mesh.devices.flat[0].platform))

    def decode(params, features: Mapping[str, np.ndarray], batch_index: int = 0):
        features = model.features(features, model.input_features)
        rows = len(next(iter(features.values())))
        padded = {key: _pad_rows(value, batch_size) for key, value in features.items()}
        rng_data = np.asarray(jax.random.key_data(jax.random.fold_in(seed_key, batch_index)))  # the same on every host
        outputs = on_mesh(mesh, functools.partial(decode_on_mesh, rng_data=rng_data), params, padded)
        return jax.tree_util.tree_map(lambda array: array[:rows], outputs)

    return decode


def _check_decoder(decode_fn: DecodeFn, max_decode_length: int, batch_size: int) -> None:
    """The decoder's own checks of its options (temperature=-1, num_decodes=0), run at once (infer said them after
    loading the checkpoint, a minute in for a large one): it is called with a model that stops it at its first step."""

    def start(rows_per_input: int):
        raise _DecoderChecked

    try:
        decode_fn(start, batch_size=batch_size, max_decode_length=max_decode_length, rng=jax.random.key(0))
    except _DecoderChecked:
        pass


class _DecoderChecked(Exception):
    """Raised by `_check_decoder`'s stand-in model: the decoder's checks passed and it began to decode."""


def decoding_seed_key(seed: int | None) -> jax.Array:
    """The key sampling's batches are folded from: `seed` (None: 0), checked before any work."""
    seed = 0 if seed is None else seed
    wrong = ValueError(f"seed={seed!r}, sampling's seed (gin: the DatasetConfig's seed, e.g. "
                       "infer/run_config.DatasetConfig.seed in runs/infer.gin), is not a whole number that fits "
                       "64 bits: give one, e.g. 0")  # fmt: skip
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise wrong
    try:
        return jax.random.key(int(seed))
    except OverflowError:
        raise wrong from None


def on_mesh(mesh, fn, params, features: Mapping[str, np.ndarray]):
    """`fn(params, features)` (jitted) on a batch every host holds in full: padded to a multiple of the `data`
    axis, split over the mesh, gathered back on every host, the padding rows dropped."""
    size = len(next(iter(features.values())))
    multiple = max(mesh.shape["data"], 1)
    with jax.set_mesh(mesh):
        outputs = fn(params, {key: replicated_batch(mesh, _pad_rows(value, multiple)) for key, value in features.items()})
    return jax.tree_util.tree_map(lambda array: gather(array)[:size], outputs)


def eval_tasks(mixture_or_task_name: str, split: str) -> list:
    """The tasks of a mixture that have `split` and metrics; none is an error (seqio would evaluate nothing and
    say so only in a log line, and the command would end with an empty table)."""
    import seqio

    tasks = seqio.get_subtasks(mixture_or_task(mixture_or_task_name))
    valid = seqio.evaluation.get_valid_eval_tasks(tasks, split)
    if not valid:
        splits = sorted({name for task in tasks if task.metric_fns or task.predict_metric_fns or task.score_metric_fns
                         for name in task.splits})  # fmt: skip
        raise ValueError(f"no task of {mixture_or_task_name} has a split {split!r} with metrics to evaluate: "
                         + (f"its splits are {', '.join(splits)}" if splits else "none of its tasks has metrics"))
    return valid


class InferenceEvaluator:
    """Inference evaluation of a dataset config's split, made once per run and reused by every evaluation.

    One `seqio.Evaluator` per task (datasets, cached targets, loggers, its own metric thread) and one compiled
    decoding for all of them: rows of every task go through the decoder in batches of `batch_size` that run on
    from one task into the next (the very last batch padded, so one shape compiles), and each task is handed to
    its evaluator as soon as its last row is decoded, so its RDKit scoring runs while the next tasks decode.
    `evaluate` returns when every task is scored. Decoding prints its progress every `progress_period` seconds
    and when done (`progress.ProgressLine`, first process only).
    """

    def __init__(
        self,
        model,
        cfg,
        output_dir: str,
        mesh,
        decode_fn: DecodeFn | None = None,
        caption_tokenizer: str | None = None,
        *,
        progress_period: float = 30.0,
        length_setting: str = LENGTH_SETTING,
    ):
        import seqio
        import tensorflow as tf

        from textchem_jax.data import seqio_tasks
        from textchem_jax.run_results import end_cut_short_jsonl

        import_task_module(cfg.module, model)
        provider = checked_provider(cfg, model, ("inputs", "targets"))  # said now, not deep in SeqIO
        check_metric_fns(seqio.get_subtasks(provider))
        tasks = eval_tasks(cfg.mixture_or_task_name, cfg.split)
        if jax.process_index() == 0:  # the one process that appends the metrics lines: none glued to a cut one
            for task in tasks:
                if tf.io.gfile.exists(path := os.path.join(output_dir, f"{task.name}-metrics.jsonl")):
                    end_cut_short_jsonl(path)
        self._cut = threading.Event()  # set when an evaluation is interrupted: its scoring writes nothing more
        self._scoring: list[concurrent.futures.Future] = []  # the metric threads an interrupted evaluation left
        self.evaluators = {
            task.name: seqio.Evaluator(
                task.name,
                feature_converter=model.feature_converter(pack=False),
                eval_split=cfg.split,
                use_cached=cfg.use_cached,
                sequence_length=dict(cfg.task_feature_lengths),
                num_examples=cfg.num_examples,
                logger_cls=tuple(_unless_cut(cls, self._cut) for cls in (_json_logger, seqio.TensorBoardLogger)),
                log_dir=output_dir,
            )
            for task in tasks
        }
        if jax.process_index() == 0:
            for name, evaluator in self.evaluators.items():
                features = ("inputs",) if seqio_tasks.NOTATION_INFIX in name else None  # a notation's targets are its task's: said once
                dataset = evaluator.cached_task_datasets[name].as_numpy_iterator()
                for line in cut_examples(evaluator.eval_tasks[0], dataset, cfg, features, setting=length_setting):
                    logger.warning(line)
        self.model = model
        self.output_dir = output_dir  # made by `evaluate`, when there is something to write into it
        self.split, self.progress_period = cfg.split, progress_period
        self.batch_size = cfg.batch_size
        self.input_length = int(cfg.task_feature_lengths["inputs"])
        self.caption_tokenizer = caption_tokenizer
        self._round_trip: dict[str, str] = {}
        self._decode = make_batch_decoder(
            model, mesh, decode_fn, int(cfg.task_feature_lengths["targets"]), batch_size=cfg.batch_size, seed=cfg.seed
        )
        self._batches = 0  # batches decoded by this evaluation so far: each samples with its own key

    def decode(self, params, features: Mapping[str, np.ndarray]):
        """The batch decoded with the next batch's key: an evaluation's batches (the round trip's included) each
        draw fresh randomness, the same again at every evaluation (`evaluate` numbers them from 0)."""
        self._batches += 1
        return self._decode(params, features, batch_index=self._batches - 1)

    def evaluate(self, params, step: int):
        """{task: {metric: value}} for `params` at `step` (also written to the loggers).

        Interrupted (Ctrl-C, SIGTERM, an error), it writes nothing more for the step, so a rerun evaluates it again:
        the tasks already handed over finish scoring under the metric settings, their lines unwritten. An interrupt
        that landed in the wait for them let them score without the settings and write at exit (retrosynthesis's
        line with roundtrip_accuracy null, taken by the rerun as the step's evaluation; each seqio.Evaluator then
        finalized on its own metric thread: "cannot join current thread")."""
        from textchem_jax.metrics import metric_settings

        concurrent.futures.wait(self._scoring)  # an interrupted evaluation's (writing nothing) read the state reset here
        self._cut.clear()
        self._round_trip = {}  # retrosynthesis top-1 precursors -> the model's forward prediction
        self._batches = 0
        self.examples = {}  # task -> the rows it was scored on
        compute = jax.process_index() == 0  # every host decodes; the first one scores
        futures = {}
        # Made here, not when the evaluator is built (textchem-eval builds it before the checkpoint loads): a refused
        # run (no checkpoint, another model's, an unreachable gs://) left an empty EVAL_OUTPUT_DIR/inference_eval/.
        # seqio's loggers expect it.
        makedirs(self.output_dir)
        with metric_settings(forward_fn=self._forward_from_round_trip, caption_tokenizer=self.caption_tokenizer):
            try:
                for name, outputs in self.decoded_tasks(params):
                    self.examples[name] = len(outputs)
                    if self._is_retro(name):
                        self._add_round_trip(name, outputs, params)
                    futures[name], _ = self.evaluators[name].evaluate(
                        compute_metrics=compute, step=step, predict_fn=lambda dataset, outputs=outputs: outputs
                    )
                concurrent.futures.wait(futures.values())
            except BaseException:
                self._cut.set()
                self._scoring = list(futures.values())
                concurrent.futures.wait(self._scoring)  # under the settings (a second interrupt: still unwritten)
                raise
            results = [future.result() or {} for future in futures.values()]  # {task: metrics} each; None off host 0
        return {
            task: {name: getattr(value, "value", value) for name, value in metrics.items()}
            for result in results
            for task, metrics in result.items()
        }

    def decoded_tasks(self, params) -> Iterator[tuple[str, list[tuple[int, np.ndarray]]]]:
        """(task, [(index, token ids)]) for each task, as soon as its last row is decoded: the best output's ids,
        or every beam's (k, length) when the decode function returns k > 1 (SeqIO then hands the metrics lists
        of beams, best first: top-k accuracy). All tasks' rows are read, in batches, before any is decoded: no
        TensorFlow work is left to the main thread while tasks are scored."""
        outputs: dict[str, list] = {name: [] for name in self.evaluators}
        names: list[str] = []  # the task of each row read but not yet decoded, in order
        indices, features = np.zeros(0, np.int64), {}  # those rows' example indices and model features
        finished: list[str] = []  # tasks whose rows are all read, the last ones possibly still waiting
        def decode_rows(count: int):  # the first `count` waiting rows, whatever their tasks
            nonlocal names, indices, features
            sequences = self.decode(params, {key: value[:count] for key, value in features.items()})[0]
            progress.advance(count)
            for name, index, row in zip(names[:count], indices[:count], sequences, strict=True):
                outputs[name].append((int(index), row if len(row) > 1 else row[0]))
            names, indices, features = names[count:], indices[count:], {k: v[count:] for k, v in features.items()}

        def decoded():  # the finished tasks none of whose rows still waits
            ready = [name for name in finished if name not in names]
            for name in ready:
                finished.remove(name)
            return [(name, outputs.pop(name)) for name in ready]

        def read(name: str, evaluator) -> list[tuple[np.ndarray, dict]]:  # (example indices, model inputs) a batch
            batches = evaluator.cached_model_datasets[name].batch(self.batch_size).as_numpy_iterator()
            return [(indices, self.model.features(batch, self.model.input_features)) for indices, batch in batches]

        # Every task's rows are read before the first task is scored: a TF iterator let go while a task's scoring
        # ran held the main thread 12-34 s (ChEBI-20 test both ways, 2 cores); reading takes 0.1-0.3 s a task.
        rows = {name: read(name, evaluator) for name, evaluator in self.evaluators.items()}
        total = sum(len(batch_indices) for batches in rows.values() for batch_indices, _ in batches)
        progress = self._progress(f"decoding {self.split}", total)
        for name, batches in rows.items():
            for batch_indices, batch in batches:
                names += [name] * len(batch_indices)
                indices = np.concatenate([indices, batch_indices])
                features = {key: np.concatenate([features[key], value]) if features else value
                            for key, value in batch.items()}  # fmt: skip
                while len(names) >= self.batch_size:
                    decode_rows(self.batch_size)
                    yield from decoded()
            finished.append(name)
            yield from decoded()
        if names:
            decode_rows(len(names))
        yield from decoded()

    def _progress(self, label: str, total: int, unit: str = "examples") -> ProgressLine:
        """This evaluator's progress line for `total` units (printed by the first process only)."""
        return ProgressLine(label, total, unit, period=self.progress_period, enabled=jax.process_index() == 0)

    @staticmethod
    def _is_retro(name: str) -> bool:
        from textchem_jax.data import seqio_tasks

        spec = seqio_tasks.SPECS.get(name)
        return spec is not None and spec.task == "retro"

    def _add_round_trip(self, name: str, outputs, params) -> None:
        """The model's forward predictions for a retrosynthesis task's top-1 precursors (decoded on every host;
        the metrics, computed on the first one only, look them up)."""
        import seqio

        task = seqio.get_mixture_or_task(name)
        vocab = task.output_features["targets"].vocabulary
        best = [row if row.ndim == 1 else row[0] for _, row in outputs]
        precursors = list(dict.fromkeys(task.postprocess_fn(vocab.decode(row.tolist())) for row in best))
        forward = self.forward_predictor(params, label=f"{name}: round trip (forward model)")  # a notation's, too
        self._round_trip.update(zip(precursors, forward(precursors)))

    def _forward_from_round_trip(self, precursors: list[str]) -> list[str]:
        return [self._round_trip[p] for p in precursors]

    def forward_predictor(self, params, label: str = "round trip (forward model)"):
        """`precursors -> products` by the model under evaluation, batched on the mesh: the forward model of
        the retrosynthesis round trip (the paper's multi-task model is its own forward predictor). `label`: its
        progress line's."""
        from textchem_jax.catalogue import PROMPTS, task_input_domain
        from textchem_jax.data import seqio_tasks
        from textchem_jax.metrics import smiles_postprocessor

        vocab = seqio_tasks.vocabulary()
        domain = task_input_domain("forward")

        def forward(precursors: list[str]) -> list[str]:
            products = []
            progress = self._progress(label, len(precursors), unit="precursors")
            for start in range(0, len(precursors), self.batch_size):
                chunk = precursors[start : start + self.batch_size]
                tokens = encode_rows(vocab, [PROMPTS["forward"] + text for text in chunk], self.input_length)
                batch = {"encoder_input_tokens": tokens, "input_domain": np.full_like(tokens, domain)}
                sequences, _ = self.decode(params, batch)
                progress.advance(len(chunk))
                products += [smiles_postprocessor(vocab.decode([int(t) for t in row[0]])) for row in sequences]
            return products

        return forward


def cut_examples(task, trimmed: Iterable[Mapping], cfg, features: Sequence[str] | None = None,
                 by: str = "evaluation", setting: str = LENGTH_SETTING,
                 untrimmed: Sequence[Mapping] | None = None) -> list[str]:  # fmt: skip
    """A line for each of `task`'s `features` (default: all) whose examples are longer than the feature lengths:
    how many of how many, and the longest. `trimmed`: the task's examples as SeqIO gives them at those lengths.
    SeqIO warns that lengths "*may be*" insufficient only when no feature has room to spare (of ChEBI-20 test's
    12 cut captions and 12 cut descriptions at 512/512 it says nothing). The untrimmed split is read only when
    an example reaches the lengths, unless the caller gives its examples as `untrimmed` (then `trimmed` is unused)."""
    lengths = {key: value for key, value in cfg.task_feature_lengths.items() if features is None or key in features}
    if untrimmed is not None:
        reached = sorted(lengths)
    else:
        reached = sorted({key for example in trimmed for key in lengths if len(example[key]) >= lengths[key]})
        if not reached:
            return []
        whole = task.get_dataset(None, split=cfg.split, shuffle=False, use_cached=cfg.use_cached)
        untrimmed = whole.take(cfg.num_examples or -1).as_numpy_iterator()
    sizes = [[len(example[key]) for key in reached] for example in untrimmed]
    if not sizes:
        return []
    lines = []
    for feature, counts in zip(reached, np.array(sizes).T):
        cut = int(np.sum(counts > lengths[feature]))
        if cut:
            lines.append(f"{task.name}: {cut} of {len(counts)} {cfg.split} examples have {feature} longer than "
                         f"{lengths[feature]} tokens (longest {counts.max()}); {by} cuts them. Raise "
                         f"{setting.format(feature=feature)} to keep them whole.")  # fmt: skip
    return lines


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


class NotationEvaluator:
    """Every task of `cfg`'s mixture that reads SMILES, evaluated on the same examples (the split's first
    `cfg.num_examples`) as written and rewritten in each notation variant (`notations.variant_names`), through the
    same decoding, postprocessing and metrics. Built once and evaluated at each step: decoding compiles once (it was
    built again at every step of CHECKPOINT_STEPS='all'). With `originals_given`, `evaluate` takes the metrics of the
    tasks as written from its caller's own evaluation of that step, instead of decoding them again."""

    def __init__(self, model, cfg, mesh, output_dir: str, variants, *, decode_fn: DecodeFn | None = None,
                 caption_tokenizer: str | None = None, originals_given: bool = False,
                 length_setting: str = LENGTH_SETTING):  # fmt: skip
        import seqio

        from textchem_jax.data import seqio_tasks

        import_task_module(cfg.module, model)
        self.variants = list(variants)
        self.originals: list[str] = []  # tasks as written, whose metrics the caller gives
        names = []
        for task in seqio.get_subtasks(mixture_or_task(cfg.mixture_or_task_name)):
            rewritten = seqio_tasks.notation_variants(task.name, self.variants) if task.name in seqio_tasks.SPECS else []
            if not rewritten:
                continue
            (self.originals if originals_given else names).append(task.name)
            names += rewritten
        if not names:
            raise ValueError(f"{cfg.mixture_or_task_name} has no task with a SMILES input (forward, retro, mol2text) "
                             "to rewrite: give a mixture or task that has one")  # fmt: skip
        mixture = f"{cfg.mixture_or_task_name}_notations"
        if mixture in seqio.MixtureRegistry.names():
            seqio.MixtureRegistry.remove(mixture)
        seqio.MixtureRegistry.add(mixture, [(name, 1.0) for name in names])
        cfg = dataclasses.replace(cfg, mixture_or_task_name=mixture, split=_first_rows(cfg.split, cfg.num_examples))
        self.evaluator = InferenceEvaluator(model, cfg, output_dir, mesh, decode_fn, caption_tokenizer,
                                            length_setting=length_setting)  # fmt: skip

    def evaluate(self, params, step: int, originals: Mapping[str, Mapping] | None = None) -> dict:
        """{task: {"original" | variant: {metric: value}}}; `originals`: {task: metrics} as written, this step's."""
        from textchem_jax.data import seqio_tasks

        originals = originals or {}  # off process 0 the caller's evaluation returned none: metrics are process 0's
        given = {task: originals[task] for task in self.originals if task in originals}
        grouped: dict[str, dict] = {}
        for name, metrics in {**given, **self.evaluator.evaluate(params, step)}.items():
            task, _, variant = name.partition(seqio_tasks.NOTATION_INFIX)
            grouped.setdefault(task, {})[variant or ORIGINAL] = metrics
        variants = (ORIGINAL, *self.variants)
        return {task: {v: grouped[task][v] for v in variants if v in grouped[task]} for task in grouped}


def _first_rows(split: str, num_examples: int | None) -> str:
    """`split[:num_examples]` (the examples evaluated, `datasets.split_slice`) where the split is not sliced already:
    a variant task rewrote every row of the split before the first were taken (40,000 USPTO-MIT rows, 1 min 51 s in
    silence, for 3 examples)."""
    from textchem_jax.data import datasets

    if not num_examples or datasets.split_slice(split).name != split:  # all of it, or a slice given
        return split
    return f"{split}[:{num_examples}]"


@functools.partial(jax.jit, static_argnums=0)
def _mean_pooled(model, params, features):
    encoded = model.encode(params, features)
    mask = (features["encoder_input_tokens"] > 0)[..., None].astype(encoded.dtype)
    return (encoded * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)


def mean_pooled_embeddings(model, params, mesh, tokens: np.ndarray, domain: int, batch_size: int = 64) -> np.ndarray:
    """(rows, d_model): the encoder's outputs averaged over each row's non-padding tokens (AMORE's embedding),
    in batches of one shape (compiled once per model)."""
    rows = []
    for start in range(0, len(tokens), batch_size):
        chunk = _pad_rows(tokens[start : start + batch_size], batch_size)
        features = model.features({"encoder_input_tokens": chunk, "input_domain": np.full_like(chunk, domain)},
                                  model.input_features)  # fmt: skip
        pooled = on_mesh(mesh, functools.partial(_mean_pooled, model), params, features)
        rows.append(pooled[: min(batch_size, len(tokens) - start)])
    return np.concatenate(rows).astype(np.float32)


def retrieval_scores(originals: np.ndarray, variants: np.ndarray) -> dict[str, float]:
    """AMORE's check: does each variant's embedding find its own original among all originals (cosine)?
    acc@1, acc@5 and mean reciprocal rank; a tie with another original counts against the variant."""
    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    similarity = unit(variants) @ unit(originals).T
    own = np.diag(similarity)
    ranks = np.sum(similarity >= own[:, None], axis=1)  # originals at least as close, its own included
    return {"acc@1": float(np.mean(ranks <= 1)), "acc@5": float(np.mean(ranks <= 5)), "mrr": float(np.mean(1.0 / ranks))}
