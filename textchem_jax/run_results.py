"""What a finished training run's MODEL_DIR says about it, read back for sweeps and reports.

A run leaves `config.gin`, `model-info.txt` (every parameter's size), `train/` TensorBoard events (loss, accuracy,
tokens per step), `training_eval/<mixture or task>/` (teacher-forced loss and accuracy), `inference_eval/<task>-metrics.jsonl` (one line per evaluation) beside the predictions
`<task>-<step>.jsonl`, and `checkpoints/<step>/`. Everything here reads those files, local or `gs://`,
and never imports a model. A run still being written, or stopped in the middle of a write, leaves a last line or
event record cut short: it is skipped with a warning, and everything before it is read.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
from collections.abc import Mapping

from textchem_jax.paths import CHECKPOINTS_FOLDER, write_whole

logger = logging.getLogger("textchem_jax.run_results")

MODEL_INFO_FILE = "model-info.txt"
RUN_CONFIG_FILE = "config.gin"  # the full gin configuration textchem-train writes into MODEL_DIR
CONVERTED_GIN_FILE = "model.gin"  # model and vocabulary of a textchem-convert directory
CONVERTED_CONFIG_FILE = "t5_config.json"  # a textchem-convert directory's T5Config, every field
_STEP = re.compile(r"^(?:checkpoint_)?(\d+)/?$")  # a checkpoint folder: ours `<step>`, T5X's `checkpoint_<step>`
_SIZE = re.compile(r"^Variable \S+\s+size\s+([\d,]+)", re.M)
_T5X_TOTAL = re.compile(r"^Total number of parameters: (\d+)$", re.M)


def parameter_count(model_dir: str) -> int | None:
    """Parameters of the run's model from its `model-info.txt` (None without that file): the sum of ours, or the
    total T5X writes, whose file also lists the optimizer's state (`param_states/...`, `step`): summed, a T5X run
    of 1,083,136 parameters read 3,249,410."""
    import tensorflow as tf

    path = os.path.join(model_dir, MODEL_INFO_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    total = _T5X_TOTAL.search(text)
    return int(total.group(1)) if total else sum(int(size.replace(",", "")) for size in _SIZE.findall(text))


def scalars(events_dir: str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every scalar in a TensorBoard folder's event files, by step."""
    import tensorflow as tf

    series: dict[str, dict[int, float]] = {}
    if not tf.io.gfile.isdir(events_dir):
        return {}
    for name in sorted(tf.io.gfile.listdir(events_dir)):
        if "tfevents" not in name:
            continue
        path = os.path.join(events_dir, name)
        for record in _complete_records(path):
            event = tf.compat.v1.Event.FromString(record)
            for value in event.summary.value:
                if value.HasField("tensor"):
                    array = tf.make_ndarray(value.tensor)
                    if array.size != 1 or array.dtype.kind not in "fiu":
                        continue  # text and image summaries
                    number = float(array.reshape(()))
                else:
                    number = float(value.simple_value)
                series.setdefault(value.tag, {})[int(event.step)] = number  # a resumed run rewrites steps
    return {tag: sorted(points.items()) for tag, points in series.items()}


def teacher_forced_scalars(model_dir: str, name: str | None = None) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of the run's teacher-forced evaluation `training_eval/<name>/`, after the
    `eval/<tag>` points in train/ of the steps trained before that layout (a run resumed across it keeps its earlier
    curve). Without `name`: the mixture the run's config.gin evaluates. T5X writes a folder for each task of a mixture
    beside the mixture's, all at the same steps, and the first in listing order was taken (mol2text's summed loss,
    1259.3, shown as the quickstart's, whose own was 608.5). With no config.gin naming it: the folder evaluated last
    (a resume's changed mixture), and a ValueError where several were."""
    import tensorflow as tf

    legacy = scalars(os.path.join(model_dir, "train"))
    merged = {tag.removeprefix("eval/"): dict(points) for tag, points in legacy.items() if tag.startswith("eval/")}
    folder = os.path.join(model_dir, "training_eval")
    name = name or _teacher_forced_mixture(model_dir)
    if name:
        series = scalars(os.path.join(folder, name))
    else:
        names = [n.rstrip("/") for n in tf.io.gfile.listdir(folder)] if tf.io.gfile.isdir(folder) else []
        candidates = {n: found for n in names if (found := scalars(os.path.join(folder, n)))}
        last_steps = {n: max(points[-1][0] for points in found.values()) for n, found in candidates.items()}
        latest = sorted(n for n, step in last_steps.items() if step == max(last_steps.values()))
        if len(latest) > 1:
            raise ValueError(f"{folder}: {', '.join(latest)} were all evaluated last (step {max(last_steps.values())}) "
                             "and the run has no config.gin naming its mixture: pass the mixture's name")  # fmt: skip
        series = candidates[latest[0]] if latest else {}
    for tag, points in series.items():
        merged.setdefault(tag, {}).update(points)  # the new layout's point wins a step both have
    return {tag: sorted(points.items()) for tag, points in merged.items()}


def config_binding(config: str, name: str):
    """What a run's config.gin text (ours or T5X's) binds to `name`, a regular expression for the binding's name
    (`LOSS_NORMALIZING_FACTOR`, `train_eval/.*mixture_or_task_name`), through macros (`%NAME`): a Python literal,
    else the text as written (a gin constant, a reference); None where nothing binds it. The last binding wins."""
    import ast

    bound = re.findall(rf"^(?:{name}) = (.+)$", config, re.M)
    if not bound:
        return None
    value, followed = bound[-1].strip(), set()
    while value.startswith("%") and value not in followed:  # a macro bound in the file: its value
        followed.add(value)
        bound = re.findall(rf"^{re.escape(value[1:])} = (.+)$", config, re.M)
        if not bound:
            break  # a constant (`%losses.SpecialLossNormalizingFactor.NUM_REAL_TARGET_TOKENS`): as written
        value = bound[-1].strip()
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _teacher_forced_mixture(model_dir: str) -> str | None:
    """The mixture (or task) the run's config.gin evaluates teacher-forced (the train_eval DatasetConfig's: T5X's
    `utils.`, our `run_config.`), else its MIXTURE_OR_TASK_NAME; None without config.gin or either binding."""
    import tensorflow as tf

    path = os.path.join(model_dir, RUN_CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        config = f.read()
    for binding in (r"train_eval/[\w.]*DatasetConfig\.mixture_or_task_name", "MIXTURE_OR_TASK_NAME"):
        name = config_binding(config, binding)
        if isinstance(name, str) and name:
            return name
    return None


def _complete_records(path: str):
    """The records of a TFRecord (event) file up to the first one cut short or damaged, which is warned about."""
    import tensorflow as tf

    records = tf.data.TFRecordDataset(path, buffer_size=1 << 20).as_numpy_iterator()
    for count in itertools.count():
        try:
            yield next(records)
        except StopIteration:
            return
        except tf.errors.DataLossError:  # TensorBoard reads such a file up to the same record
            logger.warning("%s: record %d is cut short or damaged; the %d before it are read, the rest left out",
                           path, count + 1, count)  # fmt: skip
            return


def json_lines(path: str) -> list[dict]:
    """The JSON rows of a jsonl file; a line that does not parse (a write cut short) is skipped with a warning."""
    import tensorflow as tf

    rows, bad = [], []
    with tf.io.gfile.GFile(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except (json.JSONDecodeError, RecursionError):
                bad.append(number)
    if bad:
        logger.warning("%s: skipped %d line(s) that are not JSON (line %s), e.g. a write cut short", path, len(bad),
                       ", ".join(map(str, bad[:5])))  # fmt: skip
    return rows


# textchem-train's count of non-padding input and target tokens trained on: a float32 scalar, which TensorBoard
# plots (its fast loader reads float32 scalars only) and which is exact to 2**24, and the exact count, an int64.
TOKENS_SEEN_TAG = "tokens_seen"
TOKENS_SEEN_EXACT_TAG = "tokens_seen/int64"


def end_cut_short_jsonl(path: str) -> None:
    """Drops the last line of a metrics jsonl when a copy or a write stopped in it (no line ending, not JSON), with
    a warning naming file:line (its step is then evaluated again), or ends a whole last line without its newline:
    seqio's JSONLogger appends to the text as it is, and glued the next line to the cut one (both then unreadable).
    Rewritten whole (`write_whole`: never half a file, also on gs://)."""
    import tensorflow as tf

    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    if not text or text.endswith("\n"):
        return
    kept, _, last = text.rpartition("\n")
    try:
        json.loads(last)
        repaired = text + "\n"  # a whole line without its ending: kept, ended
    except (ValueError, RecursionError):
        repaired = kept + "\n" if kept else ""
        logger.warning("%s:%d: the last line is cut short (a write or copy stopped in it): dropped, so its step "
                       "counts as not evaluated", path, text.count("\n") + 1)  # fmt: skip
    write_whole(path, repaired)


def tokens_seen(train_scalars: Mapping[str, list[tuple[int, float]]]) -> int | None:
    """Non-padding input and target tokens trained on: the run's count at its last logged step (`tokens_seen`).
    A run logged before that count (or resumed from such a run's checkpoint) is estimated, with a warning saying so:
    each logged interval's steps times its `timing/tokens_per_step` (one step's count in those runs: 2,192 where
    2,219 were trained with log_period 2; a run resumed from one counts its first interval's first step twice).
    Rounded (a count: the tables show 52,243, not 52243.0000); None when the run logged neither."""
    counted = train_scalars.get(TOKENS_SEEN_EXACT_TAG) or train_scalars.get(TOKENS_SEEN_TAG)
    if counted:
        return round(counted[-1][1])
    points = train_scalars.get("timing/tokens_per_step")
    if not points:
        return None
    logger.warning("tokens seen estimated from timing/tokens_per_step at %d logged steps: the run logged no exact "
                   "count (%s), as textchem-train's runs do since it was added", len(points), TOKENS_SEEN_TAG)  # fmt: skip
    total, previous = 0.0, 0
    for step, tokens in points:
        total += (step - previous) * tokens
        previous = step
    return round(total)


def metric_history(model_dir: str) -> dict[str, list[dict]]:
    """{task: [{"step": s, metric: value, ...}, ...]}: every inference evaluation the run wrote, by step."""
    import tensorflow as tf

    folder = os.path.join(model_dir, "inference_eval")
    history: dict[str, list[dict]] = {}
    if not tf.io.gfile.isdir(folder):
        return history
    for name in sorted(tf.io.gfile.listdir(folder)):
        if not name.endswith("-metrics.jsonl"):
            continue
        rows = [row for row in json_lines(os.path.join(folder, name)) if isinstance(row, dict) and "step" in row]
        by_step = {int(row["step"]): row for row in rows}  # a rerun evaluation replaces the earlier one
        history[name.removesuffix("-metrics.jsonl")] = [by_step[s] for s in sorted(by_step)]
    return history


def last_evaluations(history: Mapping[str, list[dict]]) -> dict[str, dict]:
    """{task: its own last row of a `metric_history`, "step" included (NaN read as None: n/a)}. Each task's own: in
    an evaluation folder where each task was evaluated by a separate textchem-eval (README's released-checkpoint
    loop), at different checkpoints, a task evaluated at an earlier step than another is still a result."""
    return {task: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rows[-1].items()}
            for task, rows in history.items() if rows}  # fmt: skip


def final_metrics(history: Mapping[str, list[dict]]) -> tuple[int | None, dict[str, dict[str, float | None]]]:
    """(step, {task: {metric: value}}) of the run's last inference evaluation: the tasks of `last_evaluations`
    evaluated at the latest step (one step per sweep point, its metrics_step; a task last evaluated earlier is
    left out). A report shows each task's own last evaluation instead."""
    last = last_evaluations(history)
    if not last:
        return None, {}
    step = max(row["step"] for row in last.values())
    return step, {task: {k: v for k, v in row.items() if k != "step"}
                  for task, row in last.items() if row["step"] == step}  # fmt: skip


def predictions(model_dir: str, task: str, step: int) -> list[dict]:
    """The rows seqio's JSONLogger wrote for `task` at `step`: {"inputs", "targets", "prediction", ...}."""
    import tensorflow as tf

    path = os.path.join(model_dir, "inference_eval", f"{task}-{step:06d}.jsonl")
    return json_lines(path) if tf.io.gfile.exists(path) else []


def latest_step(model_dir: str) -> int:
    """The newest checkpoint step in MODEL_DIR (ours: `checkpoints/<step>`, T5X: `checkpoint_<step>`), or 0.
    Through etils.epath, which imports TensorFlow for a gs:// MODEL_DIR only: importing it printed 6 C++ start-up
    lines into a SLURM job's log at each check of a local run, and took seconds."""
    from etils import epath

    steps = [0]
    for folder in (epath.Path(model_dir) / CHECKPOINTS_FOLDER, epath.Path(model_dir)):
        if folder.is_dir():
            steps += [int(m.group(1)) for path in folder.iterdir() if (m := _STEP.match(path.name))]
    return max(steps)
