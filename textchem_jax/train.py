"""`textchem-train`: the T5X-style training loop, configured by gin.

One code path for one CPU or many hosts: per-host SeqIO shards -> global batches over the mesh's
`data` axis -> jitted, sharded train step -> orbax checkpoints (state + data-iterator position) ->
evaluation (teacher-forced and RDKit inference metrics) -> console, TensorBoard and jsonl.
Resumes from the latest checkpoint in MODEL_DIR; SIGTERM or a first Ctrl-C saves and exits cleanly; a NaN
loss stops the run, keeping the last good checkpoint.

  textchem-train --gin_file=experiments/quickstart.gin --gin.MODEL_DIR="'/tmp/quickstart'"
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import logging
import math
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

from textchem_jax import run_config, run_results
from textchem_jax.cli import file_error_line, file_system_error, signal_again, unraisables_handled, without_gin_context
from textchem_jax.metrics.captions import check_tokenizer
from textchem_jax.paths import check_writable_folder, is_remote, makedirs
from textchem_jax.progress import Eta

logger = logging.getLogger("textchem_jax.train")


class TrainingStopped(RuntimeError):
    """The loss became NaN or infinite, or the run's output could not be written: the run stops and keeps its last
    good checkpoint."""


class SavedAndInterrupted(KeyboardInterrupt):
    """Ctrl-C, after the checkpoint it asked for was saved: the command exits as an interrupted one (130)."""


@dataclasses.dataclass
class _Preemption:
    """Set by SIGTERM (preemptible TPUs/VMs) or a first Ctrl-C; checked between steps, agreed on by all hosts.
    A second Ctrl-C interrupts at once (KeyboardInterrupt) as it would without us. SIGTERM or Ctrl-C once the last
    step is committed (`evaluating`), or while it was saved, ends the final evaluation at once (EvaluationCut,
    status 143 as SIGTERM's own; KeyboardInterrupt, 130): it outlasts a preemption's grace period, and a rerun
    evaluates. The handlers are ours only inside `with`: a notebook's or a test session's later Ctrl-C acts as usual.
    A cut that lands in a finalizer (a tf.data iterator's `__del__`) is one Python prints and drops: it is sent again
    a moment later."""

    class EvaluationCut(SystemExit):
        """SIGTERM during the final evaluation: the command ends as SIGTERM ends a process, status 128 + 15."""

        def __init__(self) -> None:
            super().__init__(128 + signal.SIGTERM)

    requested: str | None = None  # what asked: "SIGTERM" or "Ctrl-C"
    stepping: bool = True  # training steps still to run (then a save is what Ctrl-C asks for)
    final_evaluation: bool = False  # the last step is committed: SIGTERM or Ctrl-C ends the command at once
    cut: str | None = None  # what cut the final evaluation ("SIGTERM" or "Ctrl-C"): what it raises unwinding is that
    _resend: threading.Timer | None = None  # the cut again, when a finalizer dropped it

    def __enter__(self) -> _Preemption:
        self._previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
        signal.signal(signal.SIGTERM, self._handle)
        self._unraisables = unraisables_handled(self._dropped)
        self._unraisables.__enter__()
        if self._previous[signal.SIGINT] is signal.default_int_handler:  # not where SIGINT is ignored (nohup)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        self.settle()
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._unraisables.__exit__(None, None, None)
        logging.getLogger("absl").removeFilter(self._silent)

    def _dropped(self, unraisable) -> bool:
        """Python ends an exception raised in a finalizer here; the cut is raised again once the finalizer is done
        (the evaluation went on to the end, and exited 0, when the SIGTERM landed in one)."""
        if not (self.cut and isinstance(unraisable.exc_value, (self.EvaluationCut, KeyboardInterrupt))):
            return False
        self._resend = signal_again(signal.SIGTERM if self.cut == "SIGTERM" else signal.SIGINT)
        return True

    def settle(self) -> None:
        """The cut is being acted on: a resend still due would cut the acting short (its message unprinted)."""
        if self._resend:
            self._resend.cancel()

    @staticmethod
    def _silent(record: logging.LogRecord) -> bool:
        return False

    def _handle(self, signum, frame) -> None:
        what = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        if self.final_evaluation:
            self.cut_by(what)
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt("interrupted at once: the steps since the last checkpoint are not saved")
        self.requested = what
        if self.stepping and jax.process_index() == 0:  # else `evaluating` ends the command; said once, not per host
            again = " (Ctrl-C again stops at once, without saving)" if signum == signal.SIGINT else ""
            logger.warning("%s received: saving a checkpoint after this step, then exiting%s", self.requested, again)

    def evaluating(self) -> None:
        """The last step is committed: from now on SIGTERM or Ctrl-C, and one received while it was saved, cut the
        evaluation (a Ctrl-C received then ran the whole evaluation, status 0)."""
        self.final_evaluation = True
        if self.requested:
            self.cut_by(self.requested)

    def cut_by(self, what: str) -> None:
        """Ends the final evaluation: EvaluationCut for SIGTERM, KeyboardInterrupt for Ctrl-C (`train` says the step
        is saved)."""
        logging.getLogger("absl").addFilter(self._silent)  # seqio logs the cut as its own error while unwinding
        self.cut = what
        raise self.EvaluationCut if what == "SIGTERM" else KeyboardInterrupt

    def agreed(self) -> bool:
        if jax.process_count() == 1:
            return bool(self.requested)
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.array(bool(self.requested)))))


def _numpy(batch) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in batch.items()}


class _Progress:
    """Console lines with throughput and ETA, and clu metric writers for TensorBoard."""

    def __init__(self, model_dir: str, total_steps: int, first_step: int):
        self.model_dir = model_dir
        self.writer = self._writer("train")
        self.eval_writers: dict[str, Any] = {}
        self.total = total_steps
        self.last = time.perf_counter()
        self.last_step = first_step
        self.eta = Eta(total_steps)

    def _writer(self, folder: str):
        """TensorBoard only (the console lines are the human-readable log), written by process 0."""
        from clu import metric_writers

        if jax.process_index() == 0:
            return metric_writers.SummaryWriter(os.path.join(self.model_dir, folder))
        return metric_writers.MultiWriter([])

    def write_training_eval(self, step: int, name: str, scalars: Mapping[str, float]) -> None:
        """Teacher-forced metrics in `training_eval/<mixture or task>/` under the train tags, as T5X writes them:
        one TensorBoard shows our runs and T5X's alike."""
        if name not in self.eval_writers:
            self.eval_writers[name] = self._writer(os.path.join("training_eval", name))
        self.eval_writers[name].write_scalars(step, scalars)

    def flush(self) -> None:
        for writer in (self.writer, *self.eval_writers.values()):
            writer.flush()

    def leave_out(self, seconds: float) -> None:
        """Time spent on no step (an evaluation) stays out of step time, throughput, MFU and the ETA: the first
        line after an evaluation read 7,439 ms/step and MFU 0.8% for ~300 ms and 19%, a false dip in each plot."""
        self.last += seconds
        self.eta.leave_out(seconds)

    def log(self, step: int, metrics: Mapping[str, Any], tokens: float, model_flops: float | None,
            hardware_flops: float | None, peak: float | None, tokens_seen: int | None = None):  # fmt: skip
        """`metrics`: the interval's (`trainer.Interval`); `tokens`: its non-padding tokens per step, all hosts;
        `model_flops`: the step's analytic count, all hosts (`models.flops`); `hardware_flops`: XLA's count of
        the whole step's program, before it is split over the devices; `peak`: the whole run's FLOP/s
        (`trainer.run_peak_flops`), what MFU and HFU divide by; `tokens_seen`: the run's count of tokens trained on,
        a float32 scalar that TensorBoard plots (exact to 2**24) and the exact int64 (`run_results` reads it)."""
        now = time.perf_counter()
        seconds_per_step = (now - self.last) / max(step - self.last_step, 1)
        self.last, self.last_step = now, step
        scalars = {key: float(value) for key, value in metrics.items()}
        scalars["timing/steps_per_second"] = 1.0 / seconds_per_step
        scalars["timing/tokens_per_second"] = tokens / seconds_per_step
        scalars["timing/tokens_per_step"] = tokens  # non-padding, all hosts: older runs' tokens seen sum it
        if model_flops and peak:
            scalars["timing/mfu"] = model_flops / seconds_per_step / peak
        if hardware_flops and peak:
            scalars["timing/hfu"] = hardware_flops / seconds_per_step / peak
        if tokens_seen is not None:
            scalars[run_results.TOKENS_SEEN_TAG] = float(tokens_seen)
            self.writer.write_summaries(step, {run_results.TOKENS_SEEN_EXACT_TAG: np.int64(tokens_seen)})
        self.writer.write_scalars(step, scalars)
        seconds_left = self.eta.update(step, now)  # None at the first line, whose step compiled the program
        compiled = seconds_left is None
        eta = "at the next line" if compiled else f"{seconds_left:.0f} s"
        # Without `learning_rate_fn` the trainer cannot know the optimizer's rate: say so, not "nan".
        learning_rate = f"{scalars['learning_rate']:.2e}" if "learning_rate" in scalars else "n/a"
        line = (
            f"step {step}/{self.total} ({100 * step / self.total:.0f}%) loss {scalars['loss']:.4f} "
            f"accuracy {scalars['accuracy']:.3f} lr {learning_rate} "
            f"{scalars['timing/tokens_per_second']:.0f} tokens/s {seconds_per_step * 1000:.0f} ms/step"
            f"{' (compilation included)' if compiled else ''} ETA {eta}"
        )
        if "timing/mfu" in scalars:
            line += f" MFU {100 * scalars['timing/mfu']:.1f}%"
        if "timing/hfu" in scalars:
            line += f" HFU {100 * scalars['timing/hfu']:.1f}%"
        if jax.process_index() == 0:
            print(line, flush=True)


def train(
    *,
    model,
    model_dir: str,
    train_dataset_cfg: run_config.DatasetConfig,
    train_eval_dataset_cfg: run_config.DatasetConfig | None = None,
    infer_eval_dataset_cfg: run_config.DatasetConfig | None = None,
    checkpoint_cfg: run_config.CheckpointConfig = run_config.CheckpointConfig(),
    optimizer,
    total_steps: int,
    mesh=None,
    trainer_cls=None,
    eval_period: int | None = None,
    eval_steps: int = 8,
    log_period: int = 10,
    random_seed: int = 0,
    decode_fn=None,
    caption_tokenizer: str | None = None,
    started: Callable[[], None] | None = None,
) -> dict:
    """Trains the model adapter `model` until `total_steps`, resuming from MODEL_DIR; returns the final
    evaluation metrics.

    `optimizer` is any optax transformation (gin: OPTIMIZER); `mesh` defaults to
    `partitioning.make_mesh()`; `trainer_cls(model=, optimizer=, mesh=)` builds the trainer (gin binds
    its `num_microbatches` and `learning_rate_fn`). Evaluation every `eval_period` steps and at the end:
    teacher-forced on `train_eval_dataset_cfg` (`eval_steps` batches), inference metrics on
    `infer_eval_dataset_cfg` decoded with `decode_fn` (default greedy), captions tokenized for BLEU/METEOR
    by `caption_tokenizer` (a local SciBERT folder, as MolT5's scripts; default: the documented word tokenizer).
    `started` is called once the state is restored or made, before the first step: MODEL_DIR's description of the
    run (model-info.txt, spiece.model, textchem-train's config.gin) is written then, so a resume that fails (another
    model, another optimizer) leaves the run's own in place. By default, under a parsed gin configuration (a
    notebook's `launch.configured(train)()`), config.gin and provenance.json as textchem-train writes them: without
    them textchem-report and textchem-robustness refused the run.
    """
    import tensorflow as tf

    from textchem_jax import checkpoints as ckpt
    from textchem_jax import partitioning
    from textchem_jax import trainer as trainer_lib
    from textchem_jax.model_loading import check_checkpoint_vocabulary, check_recorded_architecture

    tf.config.set_visible_devices([], "GPU")  # tf.data only: the accelerators belong to JAX
    if total_steps < 0:
        raise ValueError(f"total_steps (gin TRAIN_STEPS) is {total_steps}: give the step to train to (0 trains nothing)")
    if os.path.basename(model_dir.rstrip("/")) == run_results.CHECKPOINTS_FOLDER and tf.io.gfile.isdir(model_dir) and any(
        name.rstrip("/").isdigit() for name in tf.io.gfile.listdir(model_dir)
    ):  # a fresh run in checkpoints/checkpoints/, beside the run it was meant to resume
        raise ValueError(f"MODEL_DIR {model_dir} is a run's checkpoints folder: give the run's own folder "
                         f"({os.path.dirname(model_dir.rstrip('/'))}) to resume it")  # fmt: skip
    _refuse_a_t5x_run(model_dir)
    check_writable_folder(model_dir, "MODEL_DIR")
    if caption_tokenizer is not None:
        check_tokenizer(caption_tokenizer)  # not after training, at the first evaluation
    mesh = partitioning.make_mesh() if mesh is None else mesh
    trainer = (trainer_cls or trainer_lib.Trainer)(model=model, optimizer=optimizer, mesh=mesh)
    partitioning.check_divisible(mesh, model.abstract_params(), trainer.rules)  # before the data and the model
    _check_batch_sizes(trainer, train=train_dataset_cfg, train_eval=train_eval_dataset_cfg if eval_steps else None)
    check_checkpoint_vocabulary(model, model_dir, otherwise=", or give another MODEL_DIR to start anew")  # a resume
    if tf.io.gfile.isdir(os.path.join(model_dir, run_results.CHECKPOINTS_FOLDER)):  # a resume: what shapes cannot show
        check_recorded_architecture(model, model_dir, "orbax", lambda: "resume it with the model it was trained with "
                                    "(its gin files and overrides), or give another MODEL_DIR to start anew",
                                    resuming=True)  # fmt: skip
    _refuse_if_trained_elsewhere(model_dir)
    if train_dataset_cfg.mixture_or_task_name is not None:  # a misspelt name: said before the intro says it trains
        run_config.import_task_module(train_dataset_cfg.module, model)
        run_config.checked_provider(train_dataset_cfg, model, ("inputs", "targets"))
        _check_evaluation_data(model, train_dataset_cfg, train_eval_dataset_cfg if eval_steps else None,
                               infer_eval_dataset_cfg)  # fmt: skip
    if jax.process_index() == 0:  # the data pipeline, the model and the first step take a while: say what comes
        lengths = ", ".join(f"{name} {length}" for name, length in train_dataset_cfg.task_feature_lengths.items())
        mesh_shape = " x ".join(f"{axis} {size}" for axis, size in mesh.shape.items())
        print(f"training {train_dataset_cfg.mixture_or_task_name} to step {total_steps} (batch "
              f"{train_dataset_cfg.batch_size}, {lengths} tokens; mesh {mesh_shape}) in {model_dir}", flush=True)  # fmt: skip
    dataset = run_config.get_dataset(train_dataset_cfg, model, seed=random_seed, mesh=mesh)
    iterator = iter(dataset)
    state = trainer.init_state(jax.random.key(random_seed))

    fresh = not tf.io.gfile.exists(model_dir)
    makedirs(model_dir)  # only now: a run that could not start left an empty MODEL_DIR behind
    with _only_trainer(model_dir):  # a second textchem-train on the run mixed both into it
        try:
            checkpoints = ckpt.Checkpoints(os.path.join(model_dir, run_results.CHECKPOINTS_FOLDER), keep=checkpoint_cfg.keep)
            restored = _restore(checkpoints, state, iterator, checkpoint_cfg.restore_fallback, trainer)
            if restored is not None:
                _check_same_start(model_dir, checkpoint_cfg.initial_checkpoint_path)  # before config.gin is rewritten
                state, step = restored
                if jax.process_index() == 0:  # once, not once per host (SLURM and TPU pods log every process)
                    print(f"resumed from step {step} in {checkpoints.directory}", flush=True)
            elif checkpoint_cfg.initial_checkpoint_path:
                from textchem_jax.model_loading import initial_params

                path = checkpoint_cfg.initial_checkpoint_path
                params, step = initial_params(model, path, mesh, like=state.params)  # T5X: steps count on from its step
                if step >= total_steps:  # it evaluated "step N" and left checkpoints/ empty: no checkpoint of it
                    raise ValueError(f"TRAIN_STEPS={total_steps} does not go past step {step} of INITIAL_CHECKPOINT_PATH "
                                     f"{path}: TRAIN_STEPS counts from the first run's step 0, as in T5X; give "
                                     f"--gin.TRAIN_STEPS={step + total_steps} to train {total_steps} more")  # fmt: skip
                state = state.replace(params=params, step=jax.device_put(np.int32(step), state.step.sharding))
                if jax.process_index() == 0:
                    print(f"initialized from {path} (step {step})", flush=True)
        except BaseException:
            if fresh:  # e.g. a starting checkpoint of another model: no empty MODEL_DIR/checkpoints/ is left behind
                _remove_if_only_folders(model_dir)
            raise
        _write_model_info(model_dir, trainer, model, mesh)
        _keep_vocabulary(model_dir, model)
        first_step = int(state.step)
        started = started or functools.partial(_configured_run_described, model_dir)
        if first_step < total_steps or fresh:  # a finished run run again with other settings
            started()  # rewrote config.gin with them: the file to rerun the experiment from described no step trained

        evaluated_parts = {"teacher-forced": train_eval_dataset_cfg, "decoding": infer_eval_dataset_cfg}
        evaluate = functools.partial(
            _evaluate, trainer, teacher_forced=_teacher_forced_datasets(trainer, train_eval_dataset_cfg, eval_steps,
                                                                        random_seed),
            eval_steps=eval_steps, splits={part: cfg.split for part, cfg in evaluated_parts.items() if cfg is not None},
            inference=_inference_evaluator(
                model, infer_eval_dataset_cfg, os.path.join(model_dir, "inference_eval"), mesh, decode_fn, caption_tokenizer,
                random_seed,
            ),
        )  # fmt: skip
        if first_step >= total_steps:
            if jax.process_index() == 0:
                print(f"step {first_step} already reaches total_steps={total_steps} (TRAIN_STEPS counts from step 0 "
                      "of the first run, as in T5X): nothing to train; raise TRAIN_STEPS to train on",
                      flush=True)  # fmt: skip
            evaluated = _final_evaluation(model_dir, first_step, train_eval_dataset_cfg if eval_steps else None,
                                          infer_eval_dataset_cfg)  # fmt: skip
            if evaluated:  # a finished run run again: decoded and scored once already, nothing to lower or decode
                if jax.process_index() == 0:
                    print(f"its evaluation at step {first_step} is in {model_dir}; not repeated (textchem-eval "
                          "evaluates a checkpoint anew)", flush=True)  # fmt: skip
                checkpoints.close()
                return evaluated
        length_check = None
        if restored is None and jax.process_index() == 0 and train_dataset_cfg.mixture_or_task_name is not None:
            length_check = threading.Thread(target=_say_cut_training_examples, args=(train_dataset_cfg, model),
                                            name="textchem-length-check", daemon=True)  # fmt: skip
            length_check.start()  # at the run's start (its train.log keeps it), beside the first step's compilation
        with _stopped_when_output_fails(checkpoints):  # a log or summary lost: which step is kept
            progress = _Progress(model_dir, total_steps, first_step)
            rng = jax.random.key(random_seed + 1)
            hardware_flops = _step_flops(trainer, state, dataset.element_spec, rng)
            if length_check is not None:
                length_check.join()  # its lines before the first step's
            peak_flops, peak_source = trainer_lib.run_peak_flops(model.t5_config.dtype)  # MFU's denominator, the whole run
            logger.info("MFU counts model FLOPs (models.flops) over %.3g FLOP/s in all (%s)", peak_flops, peak_source)
            last_good = checkpoints.latest_step()
            step = first_step
            with _Preemption() as preemption:  # SIGTERM and a first Ctrl-C save the step; the handlers go at the end
                while step < total_steps:
                    batch = _numpy(next(iterator))
                    state, _ = trainer.train_step(state, trainer.shard_batch(batch), rng)  # adds to the state's totals
                    step += 1
                    checkpoints.check()  # a save that failed in the background (a full disk) stops the run now
                    stop = preemption.agreed()
                    must_save = step % checkpoint_cfg.period == 0 or step == total_steps or stop
                    # Intervals end at multiples of log_period only: the first step's line, the last step's and a stop's
                    # show the interval so far, so a resumed run's points equal an uninterrupted run's.
                    ends_interval = step % log_period == 0
                    logged = ends_interval or step == total_steps or step == first_step + 1
                    if must_save or logged:
                        interval = trainer.interval(state)
                        bad = [k for k in ("loss", "grad_norm", "param_norm") if not math.isfinite(interval.metrics[k])]
                        if bad:
                            checkpoints.wait()
                            saved = f"The last good checkpoint is step {last_good} in {checkpoints.directory}" if last_good else (
                                "No checkpoint was saved yet")  # fmt: skip
                            raise TrainingStopped(
                                f"{', '.join(bad)} not finite by step {step} (loss {interval.metrics['loss']} over its "
                                f"last {interval.steps} steps); stopped without saving. {saved}. Lower "
                                "LEARNING_RATE, clip the gradients in OPTIMIZER, or check the data with textchem-inspect."
                            )
                        if logged:
                            model_flops = model.train_flops(batch)
                            model_flops = model_flops * jax.process_count() if model_flops else None  # each host's batch: alike
                            progress.log(step, interval.metrics, interval.tokens_per_step, model_flops, hardware_flops,
                                         peak_flops, tokens_seen=interval.tokens_seen)  # fmt: skip
                        if ends_interval:  # before a save: a run resumed from it starts the next interval
                            state = trainer.start_interval(state)
                    if must_save:
                        checkpoints.save(step, state, iterator)
                        last_good = step
                    if stop:
                        checkpoints.wait()
                        interrupted = preemption.requested == "Ctrl-C"
                        if jax.process_index() == 0:
                            print(f"{'interrupted' if interrupted else 'preempted'}: saved step {step} in "
                                  f"{checkpoints.directory}; rerun the same command to resume", flush=True)  # fmt: skip
                        if interrupted:
                            raise SavedAndInterrupted
                        return {}
                    if eval_period and step % eval_period == 0 and step < total_steps:
                        began = time.perf_counter()
                        evaluate(state, step, progress)
                        progress.leave_out(time.perf_counter() - began)
                preemption.stepping = False  # the last step is saved: Ctrl-C now asks no save (`evaluating` acts on it)
                checkpoints.wait(sealed=False)  # committed; sealed while the final evaluation runs
                try:
                    preemption.evaluating()
                    results = evaluate(state, step, progress)  # cut short, it is done again by a rerun (`_final_evaluation`)
                    if preemption.cut:  # the cut was dropped, and its resend came too late
                        raise _Preemption.EvaluationCut
                except BaseException:  # raised inside TensorFlow's tracing, the cut came out as its AssertionError
                    if not preemption.cut:
                        raise
                    preemption.settle()
                    checkpoints.join_seals()  # the step's checksums, written meanwhile: unsealed, damage would load unseen
                    if jax.process_index() == 0:
                        print(f"{preemption.cut} during the final evaluation: step {step} is saved in "
                              f"{checkpoints.directory}; the evaluation is skipped, rerun the same command to evaluate",
                              file=sys.stderr, flush=True)  # fmt: skip
                    raise (_Preemption.EvaluationCut if preemption.cut == "SIGTERM" else SavedAndInterrupted) from None
            checkpoints.close()
            progress.flush()
        return results


@contextlib.contextmanager
def _stopped_when_output_fails(checkpoints) -> Iterator[None]:
    """A summary, log or prediction file that cannot be written (a full disk, a bucket gone) stops the run as a failed
    save does, saying which checkpoint is kept: TensorFlow's op error ("[Op:FlushSummaryWriter]") said neither that
    nor what to do."""
    try:
        yield
    except Exception as error:
        if not file_system_error(error):
            raise
        try:
            last = checkpoints.latest_step()
            kept = f"Step {last} in {checkpoints.directory} is the last checkpoint" if last is not None else "No checkpoint was saved"
        except Exception:  # the checkpoints' folder is as unreachable
            kept = f"The checkpoints in {checkpoints.directory} are kept"
        raise TrainingStopped(f"{file_error_line(error)}. {kept}; fix that (free space, wait for the bucket) and "
                              "rerun the same command to resume") from error  # fmt: skip


def _restore(checkpoints, state, iterator, fallback: bool, trainer):
    """`checkpoints.restore` into `state`'s layout; a checkpoint written before the state kept its train metric
    totals (`TrainState.totals`) resumes with empty ones that log no `tokens_seen` (its earlier steps were not
    counted: `run_results.tokens_seen` estimates that run's), where it was refused as another optimizer's state."""
    from textchem_jax import checkpoints as ckpt

    try:
        return checkpoints.restore(ckpt.abstract_like(state), iterator, fallback=fallback)
    except ValueError as error:
        fields = {"step": state.step, "params": state.params, "opt_state": state.opt_state}  # what such a step holds
        try:
            fields, step = checkpoints.restore(ckpt.abstract_like(fields), iterator, fallback=fallback)
        except (ValueError, TypeError):  # not that either (TypeError: nothing restored): the first error says why
            raise error from None
    return type(state)(**fields, totals=trainer.empty_totals(counted=False)), step


def _check_same_start(model_dir: str, given: Any) -> None:
    """A resume reads the run's own checkpoints, never INITIAL_CHECKPOINT_PATH: one other than the run started from
    was ignored without a word, and config.gin, rewritten with it, no longer said what the run had started from."""
    import tensorflow as tf

    path = os.path.join(model_dir, run_results.RUN_CONFIG_FILE)
    if not tf.io.gfile.exists(path):  # a run configured from Python: nothing recorded
        return
    with tf.io.gfile.GFile(path) as f:
        recorded = run_results.config_binding(f.read(), r"(?:run_config\.)?CheckpointConfig\.initial_checkpoint_path")

    def plain(value):
        return value.rstrip("/") if isinstance(value, str) else value

    if plain(recorded) == plain(given):
        return
    elsewhere = " (or another MODEL_DIR to start from it)" if given else ""
    raise ValueError(f"{model_dir} resumes from its own checkpoints, so INITIAL_CHECKPOINT_PATH={given!r} would not be "
                     f"read: the run started from {recorded!r}, as {path} records; resume it with "
                     f"--gin.INITIAL_CHECKPOINT_PATH=\"{recorded!r}\"{elsewhere}")  # fmt: skip


def _check_batch_sizes(trainer, **configs) -> None:
    """Each batch training splits over the mesh's `data` axis (and into `num_microbatches`) divides by it: BATCH_SIZE
    16 on 3 devices, or 10 on 8 with NUM_PARTITIONS=2, was JAX's sharding error at the first step, with config.gin
    and an empty checkpoints/ left in MODEL_DIR. Inference pads its last batch and needs no such check."""
    data = trainer.mesh.shape["data"]
    for scope, cfg in configs.items():
        if cfg is None:
            continue
        slices = trainer.num_microbatches if scope == "train" else 1
        multiple = math.lcm(data, slices)
        if cfg.batch_size % multiple:
            lower, higher = cfg.batch_size // multiple * multiple, (cfg.batch_size // multiple + 1) * multiple
            sizes = " or ".join(str(size) for size in (lower, higher) if size)
            split = (f"the mesh's data axis ({data}: {trainer.mesh.devices.size} devices / NUM_PARTITIONS "
                     f"{trainer.mesh.devices.size // data})")  # fmt: skip
            into = f" and of num_microbatches ({slices})" if slices > 1 else ""
            raise ValueError(f"{scope}/ batch size {cfg.batch_size} (gin BATCH_SIZE) is not a multiple of {split}{into}: "
                             f"use {sizes}, or change NUM_PARTITIONS")  # fmt: skip


def _check_evaluation_data(model, train_cfg, train_eval_cfg, infer_eval_cfg) -> None:
    """What the evaluations will read, checked before the first step (a task without the split, a metric function
    SeqIO cannot call, a task without targets stopped the run at its first evaluation); the tasks SeqIO leaves out
    of a mixture for want of the split are said once here, not at every evaluation."""
    import seqio

    inferred = infer_eval_cfg if infer_eval_cfg is not None and infer_eval_cfg.num_examples != 0 else None
    evaluated = {"train_eval": train_eval_cfg, "infer_eval": inferred}
    for cfg in (cfg for cfg in evaluated.values() if cfg is not None and cfg.mixture_or_task_name is not None):
        run_config.import_task_module(cfg.module, model)
        tasks = seqio.get_subtasks(run_config.checked_provider(cfg, model, ("inputs", "targets")))
        if cfg is inferred:
            run_config.check_metric_fns(tasks)
    for line in run_config.check_splits({"train": train_cfg, **evaluated}):
        logger.warning(line)


LENGTH_CHECKED_EXAMPLES = 256  # examples of each task whose lengths a run's start counts (a big split: its first)


def _say_cut_training_examples(cfg, model, checked: int = LENGTH_CHECKED_EXAMPLES) -> None:
    """One warning per task and feature whose training examples are longer than TASK_FEATURE_LENGTHS, as evaluation
    and inference say theirs (`evaluator.cut_examples`): training cut them without a word (at 48/32 tokens, 254 of
    256 demo text2mol inputs). Counted on each task's first `checked` examples, once, when the run starts, while the
    first step compiles (1,000 of each demo task took 4 s, 256 1.7 s); SeqIO still reads each split whole (a second
    read of a remote one). A failure is the training pipeline's to report: here it only skips the count."""
    import seqio

    from textchem_jax.evaluator import cut_examples

    for task in seqio.get_subtasks(run_config.checked_provider(cfg, model, ("inputs", "targets"))):
        if cfg.split not in task.splits:  # left out of the mixture, and said, by `_check_evaluation_data`
            continue
        try:
            whole = task.get_dataset(None, split=cfg.split, shuffle=False, use_cached=cfg.use_cached)
            examples = list(whole.take(checked + 1).as_numpy_iterator())
        except Exception as error:  # noqa: BLE001 (the same read fails in training, which says why)
            logger.debug("%s: lengths not counted: %s", task.name, error)
            continue
        first = f" (counted on its first {checked:,} {cfg.split} examples)" if len(examples) > checked else ""
        for line in cut_examples(task, (), cfg, by="training", untrimmed=examples[:checked]):
            logger.warning(line + first)


def _evaluate(trainer, state, step, progress, *, teacher_forced, eval_steps, splits: Mapping[str, str],
              inference) -> dict:  # fmt: skip
    """Teacher-forced metrics on `eval_steps` batches of each of `teacher_forced()`'s datasets, then RDKit inference
    metrics from `inference()`'s evaluator; `splits`: the split of each part, {"teacher-forced": .., "decoding": ..},
    which the heading names (`_splits_heading`)."""
    from textchem_jax import evaluator as eval_lib
    from textchem_jax.metrics.tables import format_table, versions_line

    results: dict = {}
    evaluated: dict[str, str] = {}  # the parts that ran, and their splits
    if teacher_forced is not None:  # a split missing for one task: said, and the other evaluation runs (returning
        try:  # here skipped the inference evaluation, unsaid)
            datasets = teacher_forced()
        except FileNotFoundError as error:
            logger.warning("no teacher-forced evaluation: %s", error)
        else:
            for name, batches in datasets.items():
                scalars = eval_lib.teacher_forced(trainer, state.params, iter(batches), eval_steps)
                progress.write_training_eval(step, name, scalars)
            results["teacher_forced"] = scalars  # the mixture's, evaluated last
            evaluated["teacher-forced"] = splits["teacher-forced"]
    examples = {}
    if inference is not None:
        try:
            evaluator = inference()
        except FileNotFoundError as error:
            logger.warning("no inference evaluation: %s", error)
        else:
            results.update(evaluator.evaluate(state.params, step))
            examples = evaluator.examples
            evaluated["decoding"] = splits["decoding"]
    if results and jax.process_index() == 0:
        # The teacher-forced row first, then the tasks: sorted with them, it stood between my_text2smiles and
        # textchem_demo_forward.
        decoded = {task: metrics for task, metrics in results.items() if task != "teacher_forced"}
        tables = [format_table({"teacher_forced": results["teacher_forced"]})] if "teacher_forced" in results else []
        tables += [format_table(decoded, examples)] if decoded else []
        print(f"evaluation at step {step} ({_splits_heading(evaluated)}):", *tables, versions_line(), sep="\n",
              flush=True)  # fmt: skip
    return results


def _splits_heading(splits: Mapping[str, str]) -> str:
    """`validation` where every part read it, else each part's (`teacher-forced: validation; decoding: test`): the
    heading named one split, the teacher-forced one, above metrics decoded on the base config's test split."""
    if len(set(splits.values())) == 1:
        return next(iter(splits.values()))
    return "; ".join(f"{part}: {split}" for part, split in splits.items())


def _final_evaluation(model_dir: str, step: int, teacher_forced_cfg, inference_cfg) -> dict:
    """The run's final evaluation at `step` as `_evaluate` returns it, read back from MODEL_DIR when each that is
    configured is there (teacher-forced: training_eval/; inference: every task's metrics line), else {} (none
    configured, or cut short: it is done again). Rerunning a finished run evaluated once more, each time."""
    results: dict = {}
    if teacher_forced_cfg is not None:
        series = run_results.teacher_forced_scalars(model_dir, teacher_forced_cfg.mixture_or_task_name)
        at_step = {tag: dict(points).get(step) for tag, points in series.items()}
        if None in at_step.values():  # cut short (none at all: its split is missing, said at each evaluation)
            return {}
        if at_step:
            results["teacher_forced"] = at_step
    if inference_cfg is not None and inference_cfg.num_examples != 0:
        from textchem_jax.evaluator import eval_tasks

        run_config.import_task_module(inference_cfg.module)
        history = run_results.metric_history(model_dir)
        names = [task.name for task in eval_tasks(inference_cfg.mixture_or_task_name, inference_cfg.split)]
        if not all(history.get(name) and history[name][-1]["step"] == step for name in names):
            return {}
        results.update(run_results.final_metrics({name: history[name] for name in names})[1])
    return results


LOCK_FILE = ".textchem-train.lock"


def _refuse_a_t5x_run(model_dir: str) -> None:
    """A T5X run's MODEL_DIR (`checkpoint_<step>/`) was trained from scratch without a word: our steps were saved
    beside T5X's, its config.gin overwritten and its metric files went on with our steps as if one run's."""
    import tensorflow as tf

    from textchem_jax import t5x_checkpoints

    if not tf.io.gfile.isdir(model_dir):
        return
    try:
        latest = t5x_checkpoints.checkpoint_directory(model_dir)
    except FileNotFoundError:  # no T5X step in it
        return
    raise ValueError(f"{model_dir} holds a T5X run (its latest step: {latest}), which textchem-train does not resume: "
                     f"resume it with t5x.train, or start a new MODEL_DIR from it with "
                     f"--gin.INITIAL_CHECKPOINT_PATH=\"'{model_dir}'\" (TRAIN_STEPS counts on from its step)")  # fmt: skip


def _refuse_if_trained_elsewhere(model_dir: str) -> None:
    """`_only_trainer`'s refusal said at once, before the data pipeline and the model are built (~20 s), where a
    run has been (a MODEL_DIR is made only once the run can start)."""
    if not is_remote(model_dir) and os.path.exists(os.path.join(model_dir, LOCK_FILE)):  # local only: remote skipped
        with _only_trainer(model_dir, probe=True):
            pass


@contextlib.contextmanager
def _only_trainer(model_dir: str, probe: bool = False) -> Iterator[None]:
    """One textchem-train per MODEL_DIR. Two (a second terminal, a job started twice) trained at once: their
    steps overwrote each other's checkpoints, config.gin and summaries mixed both settings, or a save failed
    with advice to free disk space. A local MODEL_DIR is locked (`flock`, gone when the process ends, however it
    ends) by the first process of the run; gs:// has no such lock and is not checked."""
    if is_remote(model_dir) or jax.process_index() != 0:
        yield
        return
    import fcntl
    import socket

    # The file stays: removed while locked, a second process that had opened it would lock a deleted file, and a
    # third one a new file, both training.
    with open(os.path.join(model_dir, LOCK_FILE), "a+") as lock:  # local only: remote paths returned above
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise ValueError(f"{model_dir} is being trained by {holder}: wait for it or stop it, or give another "
                             "MODEL_DIR") from None  # fmt: skip
        except OSError as error:  # a file system without locks (some NFS mounts): trained as before, unchecked
            if not probe:  # said once, when the run takes the lock
                logger.warning("%s cannot be locked (%s): make sure no other textchem-train uses it", model_dir, error)
        else:
            lock.seek(0)
            lock.truncate()
            lock.write(f"textchem-train (pid {os.getpid()} on {socket.gethostname()})\n")
            lock.flush()
        yield


def _remove_if_only_folders(folder: str) -> None:
    """Removes `folder` when it holds no file (what a run that failed before its first save made)."""
    import tensorflow as tf

    if not any(set(files) - {LOCK_FILE} for _, _, files in tf.io.gfile.walk(folder)):
        tf.io.gfile.rmtree(folder)


def _configured_run_described(model_dir: str) -> None:
    """config.gin and provenance.json of a run configured with gin outside textchem-train (nothing from Python
    alone: its arguments are the configuration, which no file could hold)."""
    import gin

    from textchem_jax import launch

    if gin.config_str().strip():
        launch.write_config(model_dir)


def _teacher_forced_datasets(trainer, cfg, eval_steps: int, random_seed: int):
    """A function giving the run's teacher-forced batches, {name: the first `eval_steps` batches}, read at their first
    use (None: no teacher-forced evaluation): each task of a mixture that has the split, then the mixture, as T5X
    evaluates them, each into its `training_eval/<name>/` (the tasks' cost eval_steps batches each). Only the
    mixture's was written, so no task's held-out loss could be set beside a T5X run's. Read once and kept, so every
    evaluation scores the same batches, also of a shuffled config (a dataset iterated again reshuffles)."""
    if cfg is None or not eval_steps:
        return None

    def datasets() -> dict:
        run_config.import_task_module(cfg.module, trainer.model)
        return {name: list(itertools.islice(run_config.get_dataset(
                    dataclasses.replace(cfg, mixture_or_task_name=name), trainer.model, seed=random_seed,
                    mesh=trainer.mesh).as_numpy_iterator(), eval_steps))
                for name in run_config.training_eval_names(cfg)}  # fmt: skip

    return functools.cache(datasets)


def _inference_evaluator(model, cfg, output_dir, mesh, decode_fn, caption_tokenizer, random_seed: int):
    """A function giving the run's one InferenceEvaluator, made at its first use (None: no inference
    evaluation): its datasets, cached targets and compiled decoding serve every evaluation of the run. A sampling
    `decode_fn` draws from the config's seed, or the run's `random_seed` when it has none."""
    if cfg is None or cfg.num_examples == 0:
        return None
    from textchem_jax import evaluator as eval_lib

    cfg = cfg if cfg.seed is not None else dataclasses.replace(cfg, seed=random_seed)
    eval_lib.decoding_seed_key(cfg.seed)  # a wrong seed is said now, not at the first evaluation

    return functools.cache(
        lambda: eval_lib.InferenceEvaluator(model, cfg, output_dir, mesh, decode_fn, caption_tokenizer)
    )


def _write_model_info(model_dir: str, trainer, model, mesh) -> None:
    """MODEL_DIR/model-info.txt: every parameter with its shape, logical axes and partition spec."""
    import tensorflow as tf

    from textchem_jax import partitioning

    text = f"mesh: {dict(mesh.shape)}\n" + partitioning.describe_params(model.abstract_params(), trainer.rules)
    if jax.process_index() == 0:
        with tf.io.gfile.GFile(os.path.join(model_dir, "model-info.txt"), "w") as f:
            f.write(text)


def _keep_vocabulary(model_dir: str, model) -> None:
    """MODEL_DIR/spiece.model: the vocabulary the run trains with, so that the run brings its own (for
    evaluation, inference, export and runs started from it), as a textchem-convert directory does."""
    import tensorflow as tf

    from textchem_jax.data import seqio_tasks
    from textchem_jax.data import vocabulary as vocabularies

    source = vocabularies.vocabulary_file(model.vocabulary or seqio_tasks.vocabulary())
    target = os.path.join(model_dir, vocabularies.CHECKPOINT_VOCABULARY_FILE)
    if jax.process_index() == 0 and source != "?" and source.rstrip("/") != target.rstrip("/"):  # gs:// too
        tf.io.gfile.copy(source, target, overwrite=True)


def _step_flops(trainer, state, element_spec, rng) -> float | None:
    """FLOPs of one train step, lowered on zeros shaped like the data's batches (lowering reads shapes only), so
    the data is not read twice: a second iterator fills the shuffle and packing buffers again (2.9 s of a 16.6 s
    two-step tiny run). None where batch shapes are not static."""
    try:
        zeros = {key: np.zeros(spec.shape, spec.dtype.as_numpy_dtype) for key, spec in element_spec.items()}
    except TypeError:  # a dimension of None
        return None
    return _lowered_flops(trainer, state, zeros, rng)


def _lowered_flops(trainer, state, batch, rng) -> float | None:
    """FLOPs of one train step on `batch` by XLA's cost analysis of the lowered program (for HFU), or None if
    unavailable. Not of a compiled one: that would compile the step a second time (it differs by under 1%).
    Microbatches are counted as one batch: XLA counts a loop's body once, and HFU came out below MFU."""
    if trainer.num_microbatches > 1:
        whole = dataclasses.replace(trainer, num_microbatches=1)
        whole.state_shardings = trainer.state_shardings  # set by init_state, which the run called
        trainer = whole
    try:
        analysis = trainer.train_step.lower(state, trainer.shard_batch(batch), rng).cost_analysis()
        analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
        return float(analysis.get("flops", 0.0)) or None
    except Exception:  # cost analysis is best effort (not every backend reports it)
        return None


def main() -> int:
    import gin

    from textchem_jax import checkpoints as ckpt
    from textchem_jax import launch
    from textchem_jax.run_config import UnknownTaskError

    def run() -> int:
        model_dir = gin.query_parameter("%MODEL_DIR")
        try:
            results = launch.configured(train)(started=lambda: launch.write_config(model_dir))
        except TrainingStopped as error:
            print(f"training stopped: {without_gin_context(error)}", file=sys.stderr)
            return 3
        except KeyboardInterrupt as interrupt:  # Ctrl-C: the step saved and said so, a second one, or before any step
            if not isinstance(interrupt, SavedAndInterrupted):
                print(f"textchem-train: {str(interrupt) or 'interrupted'}", file=sys.stderr, flush=True)
            return 130
        except (UnknownTaskError, launch.ConfigError) as error:  # a misspelt MIXTURE_OR_TASK_NAME, no run file
            print(f"configuration error: {without_gin_context(error)}", file=sys.stderr)
            return 2
        except ckpt.CheckpointError as error:
            if launch.lost_peer(error):  # a save's collective found another process dead: not a disk problem
                raise
            print(f"training stopped: {without_gin_context(error)}", file=sys.stderr)
            return 4
        except (ValueError, FileNotFoundError) as error:  # our own, naming what and where: as textchem-eval says them
            print(f"textchem-train: {without_gin_context(error)}", file=sys.stderr)
            return 2
        if jax.process_index() == 0:
            import tensorflow as tf

            predictions = os.path.join(model_dir, "inference_eval")
            print(f"checkpoints: {os.path.join(model_dir, run_results.CHECKPOINTS_FOLDER)}  TensorBoard: tensorboard --logdir={shlex.quote(model_dir)}"
                  + (f"  predictions: {predictions}" if tf.io.gfile.isdir(predictions) else ""), flush=True)  # fmt: skip  (pastes as is)
        return 0 if results is not None else 1

    launch.run(run, usage=__doc__)
    return 0


if __name__ == "__main__":
    # `python -m` (textchem-sweep's points) runs this file as a second module: run the package's, which gin
    # registered and whose exceptions `train` raises (SavedAndInterrupted)
    from textchem_jax import train as package_module

    sys.exit(package_module.main())
