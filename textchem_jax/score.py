"""`textchem-score`: score a jsonl file of predictions with each task's metrics and print a table.

It reads four kinds of rows:
- ours, hand-made: `{"task", "target", "prediction"}`, a prediction may be a list of beams, best first;
- `textchem-infer --gin.infer_lib.infer.row_format='textchem'`'s: `{"task", "input", "target", "prediction",
  "beams", ...}`: every beam scored (top-k), raw decoded text cleaned here with the task's postprocessor;
- T5X's infer rows (`t5x.infer`, `textchem-infer`'s default): `{"inputs": {"inputs_pretokenized",
  "targets_pretokenized"}, "prediction", "aux"}` in `<task>-predict.jsonl-00000-of-00001`: the raw decoded
  text, cleaned here with the task's postprocessor;
- SeqIO's `inference_eval/<task>-<step>.jsonl` (T5X's and our training evaluation): `{"input", "target",
  "prediction"}`, already postprocessed.
The task comes from the row, else from the file name; its metric family from the task named in it (`forward`,
`retro`, `paragraph2actions`, `text2mol`, `mol2text`). Raw decoded text is cleaned with the postprocessor of the
registered task of that name (`textchem_gt4sd_eval_*` read an unknown piece as `\\`, as GT4SD does), so that the
scores equal the task's own evaluation; a task of the user's own is cleaned as its family's tasks are. Without
`--predictions` the packaged example is scored.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import logging
import os
import pathlib
import re
import sys
from typing import TYPE_CHECKING

from textchem_jax.catalogue import PROMPTS, TASKS, task_of
from textchem_jax.cli import command, console_handler, parse_args, quiet_libraries
from textchem_jax.paths import is_remote, makedirs, write_whole

if TYPE_CHECKING:
    from etils import epath

EXAMPLE_PREDICTIONS = pathlib.Path(__file__).parent / "examples" / "predictions.jsonl"  # local only: packaged
OUTPUT_FILE = "scores.json"  # what --output writes into a folder
_T5X_INFER_FILE = re.compile(r"^(?P<task>.+)-predict\.jsonl(-\d{5}-of-\d{5})?$")
_INFERENCE_EVAL_FILE = re.compile(r"^(?P<task>.+)-\d+\.jsonl$")


def _task_of_file(path: str) -> str | None:
    name = os.path.basename(str(path))
    match = _T5X_INFER_FILE.match(name) or _INFERENCE_EVAL_FILE.match(name)
    return match.group("task") if match else None


logger = logging.getLogger("textchem_jax.score")
_quiet_start = False  # set by main without --verbose: TensorFlow, imported to register our tasks, starts silently


class _Unscorable(ValueError):
    """A well-formed prediction row that cannot be scored; its message is said as it is."""


class NotOurTask(_Unscorable):
    """A row of a task none of our metric families scores (a user's own task): in a folder, its file is skipped."""


@functools.cache
def _postprocessing(task: str) -> tuple:
    """(postprocessor, prompt) of the registered task `task`: what its own evaluation cleans raw decoded text with
    (`textchem_gt4sd_eval_*`: an unknown piece read as `\\`) and the prompt before its inputs. Registering our tasks
    imports SeqIO and TensorFlow: only rows of raw decoded text need it. A task of the user's own: its family's."""
    from textchem_jax.data import seqio_tasks
    from textchem_jax.run_config import UnknownTaskError, register_our_tasks

    family = task_of(task)
    if task not in seqio_tasks.SPECS:
        if _quiet_start:
            quiet_libraries()
        try:
            register_our_tasks()
        except UnknownTaskError as error:
            raise _Unscorable(str(error)) from None
    spec = seqio_tasks.SPECS.get(task)
    if spec is None:
        return seqio_tasks.metric_and_postprocess(family)[1], PROMPTS[family]
    prompt = PROMPTS[spec.task] if spec.prompt is None else spec.prompt
    return seqio_tasks.metric_and_postprocess(spec.task, spec.gt4sd_unknown)[1], prompt


_NO_TARGET = ("no target to score against: this inference read inputs without targets (a .txt file); give "
              "textchem-infer a .jsonl input with 'input' and 'target' to score it")


def _text_prediction(prediction: object, key: str) -> object:
    """`prediction` when it is text (a string, or a list of strings: beams, best first); the metrics would score
    `str()` of anything else (`5`, `{"a": 1}`) as if the model had written it."""
    if isinstance(prediction, str) or (isinstance(prediction, list) and all(isinstance(p, str) for p in prediction)):
        return prediction
    raise _Unscorable(f"{key!r} must be a string (or a list of strings: beams, best first), got {json.dumps(prediction)[:80]}")


def _target_and_prediction(row: dict, task: str) -> tuple[object, object]:
    """(target, prediction) of one row of any of the kinds; raises KeyError/TypeError when malformed."""
    if "inputs" in row:  # T5X's infer row: raw decoded text, cleaned as SeqIO would
        if isinstance(row["inputs"], dict) and "inputs_pretokenized" in row["inputs"] and "targets_pretokenized" not in row["inputs"]:
            raise _Unscorable(_NO_TARGET)
        inputs, target, prediction = row["inputs"]["inputs_pretokenized"], row["inputs"]["targets_pretokenized"], row["prediction"]
        prediction = _text_prediction(prediction, "prediction")
    elif "beams" in row:  # textchem-infer's own row: raw decoded text too, every beam (top-k accuracy)
        if "input" in row and "target" not in row:
            raise _Unscorable(_NO_TARGET)
        inputs, target, prediction = row["input"], row["target"], _text_prediction(row["beams"], "beams")
    else:
        return row["target"], _text_prediction(row["prediction"], "prediction")
    postprocess, prompt = _postprocessing(task)
    example = {"product": inputs.removeprefix(prompt)} if task_of(task) == "retro" else None
    return postprocess(target, example=example, is_target=True), postprocess(prediction)


def read_predictions(path: str | os.PathLike) -> dict[str, tuple[list, list]]:
    """Rows grouped by task as (targets, predictions); a malformed line raises with file:line."""
    from textchem_jax.data.sources import not_utf8, numbered_lines  # local or gs://, a BOM dropped

    grouped: dict[str, tuple[list, list]] = {}
    file_task = _task_of_file(str(path))
    for number, line in numbered_lines(str(path)):
        if not line.strip():
            continue
        if not_utf8(line):
            raise ValueError(f"{path}:{number}: {not_utf8(line)}")
        try:
            row = json.loads(line)
            task = row.get("task", file_task)
            if task is None:
                raise KeyError("task (and the file name is not <task>-predict.jsonl-* or <task>-<step>.jsonl)")
            if task_of(task) is None:
                raise NotOurTask(f"task {task!r} is none of ours (its name holds none of {', '.join(TASKS)}), whose "
                                 "metrics textchem-score knows: evaluate a task of your own with textchem-eval")  # fmt: skip
            target, prediction = _target_and_prediction(row, task)
        except _Unscorable as error:
            raise type(error)(f"{path}:{number}: {error}") from None
        except (json.JSONDecodeError, RecursionError, KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(
                f"{path}:{number}: expected our row (task, target, prediction), T5X's infer row (inputs with "
                f"inputs_pretokenized and targets_pretokenized, prediction) or SeqIO's inference_eval row ({error})"
            ) from None
        targets, predictions = grouped.setdefault(task, ([], []))
        targets.append(target)
        predictions.append(prediction)
    return grouped


def prediction_files(path: str | os.PathLike) -> list[str]:
    """`path` itself, or the prediction files in the folder `path` (sorted): what `textchem-infer` or
    `t5x.infer` wrote for a mixture (one file per task), or a run's `inference_eval/` (one per task and step), also
    when given the folder that holds it (a MODEL_DIR, an EVAL_OUTPUT_DIR). SeqIO's `<task>-metrics.jsonl` beside
    them holds no predictions and is left out."""
    from etils import epath

    folder = epath.Path(path)  # local or gs://
    if not folder.is_dir():
        return [str(path)]
    files = sorted(str(file) for file in folder.iterdir() if not file.name.endswith("-metrics.jsonl")
                   and (file.name.endswith(".jsonl") or _T5X_INFER_FILE.match(file.name)) and file.is_file())  # fmt: skip
    # (names first: on gs:// each is_file is a request, and TensorBoard's task folders are left out by name)
    if not files and (folder / "inference_eval").is_dir():  # a run's or textchem-eval's folder: SeqIO's files in it
        return prediction_files(folder / "inference_eval")
    if not files:
        raise ValueError(f"{path} is a folder without prediction files (*.jsonl, <task>-predict.jsonl-*): give one file")
    return files


def score(path: str | os.PathLike) -> dict[str, dict[str, float | None]]:
    """Metrics per task of a file, or of every prediction file in a folder. The shards of one T5X inference
    (`<task>-predict.jsonl-00000-of-00002`, ...) are scored together; a task found in several other files (a
    run's evaluations at several steps) is shown once per file, as `task (file name)`."""
    return score_and_count(path)[0]


def score_and_count(path: str | os.PathLike) -> tuple[dict[str, dict[str, float | None]], dict[str, int]]:
    """`score(path)`, and the examples each of its tasks was scored on (same keys)."""
    from textchem_jax.data import seqio_tasks

    sets: dict[str, dict[str, tuple[list, list]]] = {}  # file name, or T5X shard set -> task -> rows
    files, skipped = prediction_files(path), 0
    for file in files:
        name = os.path.basename(file)
        shards = _T5X_INFER_FILE.match(name)
        try:
            grouped = read_predictions(file)
        except NotOurTask as error:
            if len(files) == 1:
                raise
            logger.warning("skipped %s", error)  # a run's inference_eval/ with a task of the user's own beside ours
            skipped += 1
            continue
        for task, (targets, predictions) in grouped.items():
            rows = sets.setdefault(f"{shards.group('task')}-predict.jsonl" if shards else name, {}).setdefault(task, ([], []))
            rows[0].extend(targets)
            rows[1].extend(predictions)
    if not sets:  # an empty file printed an empty table and ended 0
        raise ValueError(f"{path} holds no predictions of our tasks (every file skipped, above)" if skipped else
                         f"{path} holds no predictions (empty)")  # fmt: skip
    sets_per_task = collections.Counter(task for tasks in sets.values() for task in tasks)
    results, examples = {}, {}
    with _each_warning_once(seqio_tasks.logger, logging.getLogger("textchem_jax.metrics")):
        for name, tasks in sets.items():
            for task, (targets, predictions) in tasks.items():
                key = task if sets_per_task[task] == 1 else f"{task} ({name})"
                results[key] = seqio_tasks.metric_and_postprocess(task_of(task))[0](targets, predictions)
                examples[key] = len(targets)
    return results, examples


@contextlib.contextmanager
def _each_warning_once(*sources: logging.Logger):
    """Each distinct warning the `sources` give inside, said once at the end with the number of files it was given
    for: a run's inference_eval/ of 16 steps printed "retro: roundtrip_accuracy is n/a: ..." 16 times, one per file."""
    held: dict[str, list[logging.LogRecord]] = {}

    def hold(record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        held.setdefault(record.getMessage(), []).append(record)
        return False

    for source in sources:
        source.addFilter(hold)
    try:
        yield
    finally:
        for source in sources:
            source.removeFilter(hold)
        for message, records in held.items():
            record = records[0]
            if len(records) > 1:
                record.msg, record.args = f"{message} (for {len(records)} prediction files)", None
            logging.getLogger(record.name).handle(record)


def _output_file(text: str) -> epath.Path:
    """--output as the JSON file to write: a folder (one that exists, or a path ending in '/') gets its
    OUTPUT_FILE, where writing to the folder's own name failed after the scoring (or, on gs://, wrote an
    object beside it). Called once the libraries are quiet: as argparse's `type`, its look at a gs:// folder
    imported TensorFlow first, which printed its C++ start-up lines (cudart_stub, cpu_feature_guard)."""
    from etils import epath

    path = epath.Path(text)
    return path / OUTPUT_FILE if text.endswith("/") or path.is_dir() else path


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="textchem-score", description=__doc__.splitlines()[0])
    from etils import epath  # user paths: local or gs://

    parser.add_argument("--predictions", type=epath.Path, default=epath.Path(EXAMPLE_PREDICTIONS),
                        help="jsonl file to score, or a folder of them (textchem-infer's output, inference_eval/)")
    parser.add_argument("--output", help=f"also write the metrics as JSON to this file (into a folder, existing or "
                                         f"ending in '/': its {OUTPUT_FILE})")
    parser.add_argument("--caption_tokenizer", help="folder (local or gs://) of a Hugging Face BERT tokenizer for the caption "
                                                   "BLEU/METEOR word pieces: SciBERT's gives MolT5's numbers (needs the hf "
                                                   "extra); default: BERT's basic tokenization")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="show library logs")
    args = parse_args(parser, argv)
    logging.basicConfig(level=logging.INFO, handlers=[console_handler()])  # our counted skips and n/a metrics
    if args.verbose:
        logging.getLogger("textchem_jax").setLevel(logging.DEBUG)  # e.g. which WordNet METEOR read
    else:  # absl's INFO lines (rouge-score's "Using default tokenizer"), TensorFlow's start-up lines for gs://
        logging.getLogger("absl").setLevel(logging.WARNING)
        # and for any --output: write_whole writes it through TensorFlow, whose import after the table printed its
        # C++ start-up lines (InitializeLog, oneDNN, cudart_stub, cpu_feature_guard) for a local file too
        if args.output is not None or any(path and is_remote(path) for path in (args.predictions, args.caption_tokenizer)):
            quiet_libraries()
    if not args.predictions.exists():
        parser.error(f"no predictions file or folder at {args.predictions}")
    output = None if args.output is None else _output_file(args.output)
    from textchem_jax.metrics.captions import check_tokenizer
    from textchem_jax.metrics.settings import metric_settings

    if args.caption_tokenizer is not None:
        try:
            check_tokenizer(args.caption_tokenizer)  # as textchem-eval: before anything is read or scored
        except (ValueError, ImportError) as error:
            print(f"textchem-score: {error}", file=sys.stderr)
            return 2
    made = output is not None and not output.parent.exists()
    if output:
        makedirs(output.parent)  # before the scoring, not after it
    global _quiet_start
    _quiet_start = not args.verbose
    try:
        with metric_settings(caption_tokenizer=args.caption_tokenizer):
            results, examples = score_and_count(args.predictions)
    except ValueError as error:
        print(f"textchem-score: {error}", file=sys.stderr)
        if made and not any(output.parent.iterdir()):  # nothing scored: no empty folder left behind
            output.parent.rmdir()
        return 2
    finally:
        _quiet_start = False
    from textchem_jax.metrics.tables import format_table, library_versions, not_computed, versions_line

    print(f"Scored {args.predictions}\n{format_table(results, examples)}")
    if any(task_of(task.split(" (")[0]) == "mol2text" for task in results):
        print(f"caption tokenizer: {args.caption_tokenizer} (word pieces)" if args.caption_tokenizer else
              "caption tokenizer: BERT's basic tokenization (the default; --caption_tokenizer for SciBERT's word pieces)")  # fmt: skip
    print(versions_line())
    if output:  # n/a as JSON's null: NaN is not JSON, and strict readers (JavaScript's) reject it
        written = {task: {k: None if not_computed(v) else v for k, v in row.items()} for task, row in results.items()}
        # beside the tasks (whose names always hold a task family's, e.g. `_text2mol`): what the numbers rest on
        written.update(predictions=str(args.predictions), examples=examples, caption_tokenizer=args.caption_tokenizer,
                       versions=library_versions())  # fmt: skip
        write_whole(output, json.dumps(written, indent=2))  # a full disk leaves an earlier scores.json as it was
        print(f"Metrics written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
