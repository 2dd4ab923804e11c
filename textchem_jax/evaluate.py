"""`textchem-eval`: inference metrics of a checkpoint on a split, into `EVAL_OUTPUT_DIR` (T5X's layout).

  textchem-eval --gin_file=models/t5_1_1_tiny.gin --gin_file=runs/eval.gin \\
    --gin.CHECKPOINT_PATH="'/tmp/run'" --gin.EVAL_OUTPUT_DIR="'/tmp/eval'" \\
    --gin.MIXTURE_OR_TASK_NAME="'textchem_demo'" --gin.TASK_FEATURE_LENGTHS="{'inputs': 160, 'targets': 128}"

It evaluates the run's latest complete step and names its files by that step; `--gin.CHECKPOINT_STEPS="'all'"`
evaluates every complete step not yet in EVAL_OUTPUT_DIR, in order (T5X's eval of all checkpoints).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from textchem_jax.evaluator import DecodeFn, InferenceEvaluator, NotationEvaluator
from textchem_jax.metrics.captions import check_tokenizer
from textchem_jax.metrics.tables import format_table, robustness_markdown, versions_line


logger = logging.getLogger("textchem_jax.evaluate")

CHECKPOINT_STEPS = ("latest", "all")
PREDICTIONS_FOLDER = "inference_eval"  # in EVAL_OUTPUT_DIR, as t5x.eval (and a training run in MODEL_DIR)
_DELETION_WAIT_S = 3.0  # how long a step whose load failed may take to vanish (orbax: files, >= 0.1 s, folders)


def evaluate(
    *,
    model,
    checkpoint_path: str,
    dataset_cfg,
    output_dir: str,
    decode_fn: DecodeFn | None = None,
    mesh=None,
    caption_tokenizer: str | None = None,
    notations: Sequence[str] = (),
    checkpoint_steps: str = "latest",
) -> dict:
    """`textchem-eval`: inference metrics of a checkpoint (ours, or a Hugging Face import: step 0) on a split;
    `caption_tokenizer` a SciBERT folder (local or gs://) for MolT5's caption BLEU/METEOR (gin: CAPTION_TOKENIZER);
    `notations` (gin: NOTATIONS) also evaluates the SMILES-input tasks on their inputs rewritten in each
    (`chem.notations.variant_names`) and prints each metric's drop, into `output_dir/notations/`. SeqIO's files go
    into `output_dir/inference_eval/`, as `t5x.eval` writes them; config.gin and provenance.json beside it.

    The step is resolved once, before loading (a run still training may save newer ones meanwhile), and names
    every file. `checkpoint_steps` (gin: CHECKPOINT_STEPS): "latest" evaluates the latest complete step and returns
    {task: metrics}; "all" (T5X's `RestoreCheckpointConfig(mode='all')`) evaluates every complete step of a run in
    order, but those `output_dir` already has the metrics of, with one evaluator, and returns {step: {task: metrics}}."""
    import jax

    from textchem_jax import launch, partitioning, provenance
    from textchem_jax.model_loading import complete_checkpoints, load_for_inference, resolve_checkpoint
    from textchem_jax.run_config import check_splits, import_task_module

    if checkpoint_steps not in CHECKPOINT_STEPS:
        raise ValueError(f"checkpoint_steps={checkpoint_steps!r} (gin: CHECKPOINT_STEPS): give 'latest' (the latest "
                         "complete step) or 'all' (every complete step not yet evaluated in EVAL_OUTPUT_DIR)")  # fmt: skip
    if caption_tokenizer is not None:
        check_tokenizer(caption_tokenizer)  # before the checkpoint is read and the split decoded
    mesh = partitioning.make_mesh() if mesh is None else mesh
    predictions = os.path.join(output_dir, PREDICTIONS_FOLDER)
    said = jax.process_index() == 0  # what every host would print N times (srun, TPU --worker=all): process 0's
    import_task_module(dataset_cfg.module, model)
    for line in check_splits({"": dataset_cfg}):  # a mixture's task without the split was left out without a word
        if said:
            logger.warning(line)
    if checkpoint_steps == "latest":
        checkpoints = [resolve_checkpoint(checkpoint_path)]
    else:
        on_disk = complete_checkpoints(checkpoint_path)
        checkpoints = _not_yet_evaluated(on_disk, checkpoint_path, model, dataset_cfg, predictions)
    checkpoints = _first_process_steps(checkpoints, checkpoint_path)
    # One evaluator for every step (decoding compiles once), built before any checkpoint loads: a decoder option
    # or a task's data that cannot work was said only after a checkpoint of gigabytes was read.
    evaluator = InferenceEvaluator(model, dataset_cfg, predictions, mesh, decode_fn, caption_tokenizer) if checkpoints else None
    notation_evaluator, by_step = None, {}
    for number, (path, step) in enumerate(checkpoints, 1):
        counted = f" ({number} of {len(checkpoints)})" if checkpoint_steps == "all" else ""
        listed = checkpoint_steps == "all" and path != checkpoint_path  # one of a run's steps, listed at the start
        try:
            params = load_for_inference(model, path, mesh)  # exactly this step, whatever was saved since
        except Exception:  # a run that keeps N checkpoints deletes the oldest as it saves, also while one loads
            if not (listed and _deleted_before_its_turn(path, step, checkpoint_path)):
                raise
            if said:
                print(f"step {step}{counted}: {path} was deleted before its turn (the run keeps only its latest "
                      "checkpoints), skipped", flush=True)  # fmt: skip
            continue
        if said:
            print(f"evaluating step {step}{counted} of {checkpoint_path}"
                  + (f" ({path})" if path != checkpoint_path else ""), flush=True)  # fmt: skip
        results = by_step[step] = evaluator.evaluate(params, step=step)  # files named by its step, as T5X
        if said:  # which checkpoint, decoder and versions made the metrics line of this step
            launch.write_config(output_dir, keep_a_runs=True, checkpoint=path, step=step,
                                mixture_or_task_name=dataset_cfg.mixture_or_task_name, split=dataset_cfg.split,
                                num_examples=dataset_cfg.num_examples, batch_size=dataset_cfg.batch_size,
                                task_feature_lengths=dict(dataset_cfg.task_feature_lengths),
                                decoder=provenance.decoder(decode_fn), caption_tokenizer=caption_tokenizer,
                                notations=list(notations))  # fmt: skip
        if said:
            print(format_table(results, evaluator.examples))
        if notations:
            if notation_evaluator is None:  # built once, as `evaluator`
                notation_evaluator = NotationEvaluator(
                    model, dataset_cfg, mesh, os.path.join(output_dir, "notations"), list(notations),
                    decode_fn=decode_fn, caption_tokenizer=caption_tokenizer, originals_given=True)  # fmt: skip
            robustness = notation_evaluator.evaluate(params, step, originals=results)
            if said:
                print(robustness_markdown({"metrics": robustness}))
    if by_step and said:
        print(versions_line())
        print(f"predictions and metrics: {predictions}")
    if checkpoint_steps == "all" and said:
        _say_steps_saved_since(checkpoint_path, max(step for _, step in on_disk))
    return by_step if checkpoint_steps == "all" else by_step[step]


def _say_steps_saved_since(checkpoint_path: str, newest_listed: int) -> None:
    """'all' evaluates the steps on disk when it started: beside a live run it exited 0 saying nothing of those saved
    meanwhile. One line names them (`the run has saved steps 140-160 since; rerun to evaluate them`)."""
    from textchem_jax.model_loading import complete_checkpoints

    newer = sorted(step for _, step in complete_checkpoints(checkpoint_path) if step > newest_listed)
    if newer:
        steps = f"step {newer[0]}" if len(newer) == 1 else f"steps {newer[0]}-{newer[-1]}"
        print(f"the run has saved {steps} since; rerun to evaluate them", flush=True)


def _first_process_steps(checkpoints: list, checkpoint_path: str) -> list:
    """Process 0's steps on every process of a multi-host run: each listed the folder (a run still saving) and read
    its own EVAL_OUTPUT_DIR (only process 0 writes the metrics), and hosts evaluating different steps hung in the
    collectives until the barrier failed."""
    import jax

    if jax.process_count() == 1:
        return checkpoints
    import numpy as np
    from jax.experimental import multihost_utils

    from textchem_jax.model_loading import complete_checkpoints

    count = int(multihost_utils.broadcast_one_to_all(np.int32(len(checkpoints))))  # process 0's: shapes must agree
    ours = [step for _, step in checkpoints] if jax.process_index() == 0 else [0] * count
    steps = [int(step) for step in multihost_utils.broadcast_one_to_all(np.asarray(ours, np.int32))]
    paths = {step: path for path, step in complete_checkpoints(checkpoint_path)}  # listed after process 0's list
    return [(paths.get(step, checkpoint_path), step) for step in steps]


def _deleted_before_its_turn(path: str, step: int, checkpoint_path: str) -> bool:
    """Whether a listed step that failed to load was deleted by its run meanwhile: its folder is gone, or goes
    within `_DELETION_WAIT_S` while the run has saved a newer step (the reason it deletes one). orbax deletes a
    step's files first and its folders at least 0.1 s later: 'all' beside a run keeping 3 steps (period 10) ended
    rc=2 in 3 of 4 tries, "Could not find directory .../checkpoints/330" or "unreadable metadata: NOT_FOUND", where
    the step should be skipped. A step that stays is damaged, and its error stands."""
    import time

    import tensorflow as tf

    from textchem_jax.model_loading import complete_checkpoints

    if not tf.io.gfile.isdir(path):
        return True
    if not any(saved > step for _, saved in complete_checkpoints(checkpoint_path)):
        return False  # nothing newer: no reason for the run to delete it
    deadline = time.monotonic() + _DELETION_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if not tf.io.gfile.isdir(path):
            return True
    return False


def _not_yet_evaluated(checkpoints: list, checkpoint_path: str, model, cfg, output_dir: str) -> list:
    """The checkpoints whose step is missing from some task's `<task>-metrics.jsonl` in `output_dir` (a rerun of
    'all' evaluates only the steps saved since); says which were skipped, or that none is new."""
    import jax

    from textchem_jax.evaluator import eval_tasks
    from textchem_jax.run_config import import_task_module
    from textchem_jax.run_results import end_cut_short_jsonl

    if not checkpoints:
        raise FileNotFoundError(f"no complete checkpoint step in {checkpoint_path} yet: expected a textchem-train "
                                "MODEL_DIR (or its checkpoints/) or a T5X MODEL_DIR")  # fmt: skip
    import_task_module(cfg.module, model)
    tasks = [task.name for task in eval_tasks(cfg.mixture_or_task_name, cfg.split)]
    if jax.process_index() == 0:  # the one process that appends the metrics lines
        for path in (path for task in tasks for path in _metrics_files(output_dir, task)):
            end_cut_short_jsonl(path)
    done = set.intersection(*(_logged_steps(output_dir, task) for task in tasks))
    pending = [(path, step) for path, step in checkpoints if step not in done]
    skipped = [step for _, step in checkpoints if step in done]
    if jax.process_index() == 0:  # the others read their own EVAL_OUTPUT_DIR, and go by process 0's steps
        if skipped:
            print(f"steps already evaluated in {output_dir}: {', '.join(map(str, skipped))}", flush=True)
        if not pending:
            print(f"no new step of {checkpoint_path} to evaluate", flush=True)
    return pending


def _metrics_files(predictions: str, task: str) -> list[str]:
    """The `<task>-metrics.jsonl` files (seqio.JSONLogger's, one line per evaluation) there are: in the
    `inference_eval/` folder `predictions` or, written before that layout, in the EVAL_OUTPUT_DIR above it."""
    import tensorflow as tf

    paths = (os.path.join(folder, f"{task}-metrics.jsonl") for folder in (predictions, os.path.dirname(predictions)))
    return [path for path in paths if tf.io.gfile.exists(path)]


def _logged_steps(predictions: str, task: str) -> set[int]:
    """The steps `<task>-metrics.jsonl` has a line for (`_metrics_files`), read as `textchem-report` reads them
    (`run_results`): a line that is not JSON is skipped with a warning naming the file and the line. A line cut
    short ended 'all' with "Unterminated string starting at: line 1 column 32 (char 31)", naming no file."""
    from textchem_jax.run_results import json_lines

    rows = (row for path in _metrics_files(predictions, task) for row in json_lines(path))
    return {int(row["step"]) for row in rows if isinstance(row, dict) and "step" in row}


def main() -> int:
    from textchem_jax import launch

    launch.run_configured("textchem_jax.evaluate.evaluate", "textchem-eval")
    return 0


if __name__ == "__main__":
    sys.exit(main())
