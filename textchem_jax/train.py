"""`textchem-train`: the T5X-style training loop, configured by gin.

One code path for one CPU or many hosts: per-host SeqIO shards -> global batches over the mesh's
`data` axis -> jitted, sharded train step -> orbax checkpoints (state + data-iterator position) ->
evaluation (teacher-forced and RDKit inference metrics) -> console, TensorBoard and jsonl.
Resumes from the latest checkpoint in MODEL_DIR; SIGTERM saves and exits cleanly; a NaN loss stops
the run, keeping the last good checkpoint.

  textchem-train --gin_file=experiments/quickstart.gin --gin.MODEL_DIR="'/tmp/quickstart'"
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

logger = logging.getLogger("textchem_jax.train")


class TrainingStopped(RuntimeError):
    """The loss became NaN or infinite: the run stops and keeps its last good checkpoint."""


@dataclasses.dataclass
class _Preemption:
    """Set by SIGTERM (preemptible TPUs/VMs); checked between steps, agreed on by all hosts."""

    requested: bool = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        logger.warning("SIGTERM received: saving a checkpoint after this step, then exiting")
        self.requested = True

    def agreed(self) -> bool:
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.array(self.requested))))


def train_dataset(
    mixture_or_task_name: str,
    task_feature_lengths: Mapping[str, int],
    batch_size: int,
    *,
    split: str = "train",
    seed: int = 0,
    use_packing: bool = True,
    shuffle: bool = True,
    with_input_domain: bool = False,
):
    """This host's shard of the (repeated, shuffled, packed) training data, in per-host batches.

    `with_input_domain` keeps the per-token `input_domain` feature (e2-CLM models route by it).
    """
    import seqio

    import tasks  # noqa: F401

    if batch_size % jax.process_count():
        raise ValueError(f"BATCH_SIZE={batch_size} is not divisible by the {jax.process_count()} processes")
    from textchem_jax.data.feature_converters import domain_feature_converter

    lengths = dict(task_feature_lengths)
    if with_input_domain:
        converter = domain_feature_converter(pack=use_packing)
        lengths["input_domain"] = lengths["inputs"]
    else:
        converter = seqio.EncDecFeatureConverter(pack=use_packing)
    return seqio.get_dataset(
        mixture_or_task_name,
        task_feature_lengths=lengths,
        dataset_split=split,
        shuffle=shuffle,
        seed=seed,
        num_epochs=None,
        shard_info=seqio.ShardInfo(jax.process_index(), jax.process_count()),
        feature_converter=converter,
    ).batch(batch_size // jax.process_count(), drop_remainder=True)


def _numpy(batch) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in batch.items()}


class _Progress:
    """Console lines with throughput and ETA, and clu metric writers for TensorBoard."""

    def __init__(self, model_dir: str, total_steps: int, first_step: int):
        from clu import metric_writers

        # TensorBoard only (the console line below is the human-readable log), written by process 0.
        if jax.process_index() == 0:
            self.writer = metric_writers.SummaryWriter(os.path.join(model_dir, "train"))
        else:
            self.writer = metric_writers.MultiWriter([])
        self.total, self.first = total_steps, first_step
        self.start = self.last = time.perf_counter()
        self.last_step = first_step

    def log(self, step: int, metrics: Mapping[str, Any], tokens: float, flops_per_step: float | None, peak: float | None):
        now = time.perf_counter()
        seconds_per_step = (now - self.last) / max(step - self.last_step, 1)
        self.last, self.last_step = now, step
        scalars = {key: float(value) for key, value in metrics.items()}
        scalars["timing/steps_per_second"] = 1.0 / seconds_per_step
        scalars["timing/tokens_per_second"] = tokens / seconds_per_step
        if flops_per_step and peak:
            scalars["timing/mfu"] = flops_per_step / seconds_per_step / peak
        self.writer.write_scalars(step, scalars)
        eta = (self.total - step) * (now - self.start) / max(step - self.first, 1)
        line = (
            f"step {step}/{self.total} ({100 * step / self.total:.0f}%) loss {scalars['loss']:.4f} "
            f"accuracy {scalars['accuracy']:.3f} lr {scalars.get('learning_rate', float('nan')):.2e} "
            f"{scalars['timing/tokens_per_second']:.0f} tokens/s {seconds_per_step * 1000:.0f} ms/step "
            f"ETA {eta:.0f} s"
        )
        if "timing/mfu" in scalars:
            line += f" MFU {100 * scalars['timing/mfu']:.1f}%"
        if jax.process_index() == 0:
            print(line, flush=True)


def train(
    *,
    model_dir: str,
    model,
    mixture_or_task_name: str,
    task_feature_lengths: Mapping[str, int],
    train_steps: int,
    batch_size: int,
    optimizer_name: str = "adamw",
    learning_rate: float = 6e-4,
    schedule: str = "constant",
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    num_microbatches: int = 1,
    label_smoothing: float = 0.0,
    z_loss: float = 1e-4,
    num_partitions: int = 1,
    mesh_shape: tuple[int, int] | None = None,
    seed: int = 0,
    use_packing: bool = True,
    checkpoint_period: int = 1000,
    keep_checkpoints: int | None = 3,
    log_period: int = 10,
    eval_period: int | None = None,
    train_split: str = "train",
    eval_split: str = "validation",
    eval_batches: int = 8,
    infer_eval_examples: int | None = None,
    infer_eval_batch_size: int = 32,
    decode_fn=None,
    initial_checkpoint_path: str | None = None,
    peak_flops: float | None = None,
    mixture_or_task_module: str | None = None,
) -> dict:
    """Trains until `train_steps`, resuming from MODEL_DIR; returns the final evaluation metrics."""
    import tensorflow as tf

    from textchem_jax import checkpoints as ckpt
    from textchem_jax import partitioning
    from textchem_jax import trainer as trainer_lib
    from textchem_jax.data.seqio_tasks import import_task_module

    import_task_module(mixture_or_task_module)

    tf.config.set_visible_devices([], "GPU")  # tf.data only: the accelerators belong to JAX
    tf.io.gfile.makedirs(model_dir)
    mesh = partitioning.make_mesh(num_partitions, mesh_shape)
    schedule_fn = trainer_lib.learning_rate_schedule(schedule, learning_rate, warmup_steps, train_steps)
    trainer = trainer_lib.Trainer(
        model,
        trainer_lib.make_optimizer(optimizer_name, schedule_fn, weight_decay=weight_decay, clip_norm=clip_norm),
        mesh,
        num_microbatches=num_microbatches,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        schedule=schedule_fn,
    )
    routed = trainer_lib.reads_input_domain(model)
    dataset = train_dataset(
        mixture_or_task_name, task_feature_lengths, batch_size, split=train_split, seed=seed, use_packing=use_packing,
        with_input_domain=routed,
    )  # fmt: skip
    iterator = iter(dataset)
    example = _numpy(next(iter(dataset.take(1))))
    state = trainer.init_state(jax.random.key(seed), example)
    _write_model_info(model_dir, trainer, model, example, mesh)

    checkpoints = ckpt.Checkpoints(os.path.join(model_dir, "checkpoints"), keep=keep_checkpoints)
    restored = checkpoints.restore(ckpt.abstract_like(state), iterator)
    if restored is not None:
        state, step = restored
        print(f"resumed from step {step} in {checkpoints.directory}", flush=True)
    elif initial_checkpoint_path:
        from textchem_jax.model_loading import load_for_inference

        state = state.replace(params=load_for_inference(model, initial_checkpoint_path, mesh, like=state.params))
        print(f"initialized from {initial_checkpoint_path}", flush=True)

    first_step = int(state.step)
    preemption = _Preemption()
    preemption.install()
    progress = _Progress(model_dir, train_steps, first_step)
    rng = jax.random.key(seed + 1)
    flops = _step_flops(trainer, state, example, rng)
    if flops and peak_flops is None:
        peak_flops = trainer_lib.measure_matmul_peak()  # the MFU denominator, measured on this device
    last_good = checkpoints.latest_step()
    tokens_per_step = 0.0
    step = first_step
    while step < train_steps:
        batch = _numpy(next(iterator))
        tokens_per_step = float(np.sum(batch["decoder_target_tokens"] > 0) + np.sum(batch["encoder_input_tokens"] > 0))
        tokens_per_step *= jax.process_count()
        state, metrics = trainer.train_step(state, trainer.shard_batch(batch), rng)
        step += 1
        stop = preemption.agreed()
        must_save = step % checkpoint_period == 0 or step == train_steps or stop
        if must_save or step % log_period == 0 or step == first_step + 1:
            metrics = jax.device_get(metrics)
            bad = [k for k in ("loss", "grad_norm", "param_norm") if not math.isfinite(float(metrics[k]))]
            if bad:
                checkpoints.wait()
                raise TrainingStopped(
                    f"{', '.join(bad)} not finite at step {step} (loss {float(metrics['loss'])}); stopped without "
                    f"saving. The last good checkpoint is step {last_good} in {checkpoints.directory}. Lower "
                    "LEARNING_RATE, set clip_norm, or check the data with textchem-inspect."
                )
            if step % log_period == 0 or step == train_steps or step == first_step + 1:
                progress.log(step, metrics, tokens_per_step, flops, peak_flops)
        if must_save:
            checkpoints.save(step, state, iterator)
            last_good = step
        if stop:
            checkpoints.wait()
            print(f"preempted: saved step {step} in {checkpoints.directory}; rerun the same command to resume", flush=True)
            return {}
        if eval_period and step % eval_period == 0 and step < train_steps:
            _evaluate(trainer, state, model, mesh, model_dir, step, mixture_or_task_name, task_feature_lengths,
                      batch_size, eval_split, eval_batches, infer_eval_examples, infer_eval_batch_size,
                      decode_fn, progress, routed)  # fmt: skip
    checkpoints.wait()
    results = _evaluate(trainer, state, model, mesh, model_dir, step, mixture_or_task_name, task_feature_lengths,
                        batch_size, eval_split, eval_batches, infer_eval_examples, infer_eval_batch_size,
                        decode_fn, progress, routed)  # fmt: skip
    checkpoints.close()
    progress.writer.flush()
    return results


def _evaluate(trainer, state, model, mesh, model_dir, step, mixture, lengths, batch_size, split, eval_batches,
              infer_examples, infer_batch_size, decode_fn, progress, routed=False) -> dict:  # fmt: skip
    """Teacher-forced metrics on `split`, then (when `infer_examples` != 0) RDKit inference metrics."""
    from textchem_jax import evaluate as eval_lib

    results: dict = {}
    if eval_batches == 0 and infer_examples == 0:
        return results
    try:
        batches = train_dataset(
            mixture, lengths, batch_size, split=split, shuffle=False, with_input_domain=routed
        ).as_numpy_iterator()
        results["teacher_forced"] = eval_lib.teacher_forced(trainer, state.params, batches, eval_batches)
    except FileNotFoundError as error:
        logger.warning("no teacher-forced evaluation: %s", error)
        return results
    progress.writer.write_scalars(step, {f"eval/{k}": v for k, v in results["teacher_forced"].items()})
    if infer_examples != 0:
        evaluator = eval_lib.InferenceEvaluator(
            mixture, os.path.join(model_dir, "inference_eval"), lengths, split, infer_examples
        )
        kwargs = {"decode_fn": decode_fn} if decode_fn else {}
        results.update(evaluator.evaluate(model, state.params, mesh, step, batch_size=infer_batch_size, **kwargs))
    if jax.process_index() == 0:
        print(f"evaluation at step {step} ({split}):\n{eval_lib.format_table(results)}", flush=True)
    return results


def _write_model_info(model_dir: str, trainer, model, example, mesh) -> None:
    """MODEL_DIR/model-info.txt: every parameter with its shape, logical axes and partition spec."""
    import tensorflow as tf

    from textchem_jax import partitioning
    from textchem_jax.trainer import MODEL_FEATURES

    features = {k: v[:1] for k, v in example.items() if k in MODEL_FEATURES}
    boxed = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)}, **features)["params"])
    text = f"mesh: {dict(mesh.shape)}\n" + partitioning.describe_params(boxed, trainer.rules)
    if jax.process_index() == 0:
        with tf.io.gfile.GFile(os.path.join(model_dir, "model-info.txt"), "w") as f:
            f.write(text)


def _step_flops(trainer, state, example, rng) -> float | None:
    """Model FLOPs of one train step from XLA's cost analysis (for MFU), or None if unavailable."""
    try:
        analysis = trainer.train_step.lower(state, trainer.shard_batch(example), rng).compile().cost_analysis()
        analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
        return float(analysis.get("flops", 0.0)) or None
    except Exception:  # cost analysis is best effort (not every backend reports it)
        return None


def main() -> int:
    import gin

    from textchem_jax import launch

    def run() -> int:
        launch.write_config(gin.query_parameter("%MODEL_DIR"))
        try:
            from textchem_jax import train as this_module  # not __main__: gin registered the package's function

            results = gin.get_configurable(this_module.train)()
        except TrainingStopped as error:
            print(f"training stopped: {error}", file=sys.stderr)
            return 3
        model_dir = gin.query_parameter("%MODEL_DIR")
        if jax.process_index() == 0:
            print(f"checkpoints: {model_dir}/checkpoints  TensorBoard: tensorboard --logdir={model_dir}  "
                  f"predictions: {model_dir}/inference_eval", flush=True)  # fmt: skip
        return 0 if results is not None else 1

    launch.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
