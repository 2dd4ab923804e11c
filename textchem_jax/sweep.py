"""`textchem-sweep`: a scaling study from one gin file and a grid, each point a normal training run.

  textchem-sweep --gin_file=experiments/quickstart.gin --sweep_dir=/tmp/sweep \\
    --grid=width=32,64,128 --grid=mixture=standard,cross --gin.TRAIN_STEPS=200

Axes (`--grid=AXIS=V1,V2,...`, repeatable; the points are their product):
  size=tiny,small,base        a published T5 size (every dimension of the preset)
  width=64,128                d_model; d_ff and the heads scale with it (d_kv kept), layers kept
  mixture=standard,augm,mono,cross   the base mixture's family (`textchem_demo_cross`, `textchem_cross`) or any
                              mixture or task name
  data_fraction=0.25,1.0      the first fraction of the training split (`train[:25%]`)
  e2clm=shared,mean,cross_attention,select,frozen   an e2-CLM variant with the base model's T5 layout and loss
                              settings, everything else (DROPOUT_RATE, VOCABULARY, ...) as the base
  seed=0,1                    RANDOM_SEED
  NAME=V1,V2                  any other gin binding (`LEARNING_RATE=1e-3,3e-3`), values as gin literals
Each point trains and evaluates through `textchem-train` in its own process (`SWEEP_DIR/<point>/` is its
MODEL_DIR, its console in `train.log`); a rerun skips finished points and resumes unfinished ones from their
checkpoints. On a cluster, run one point per job: `--point=I` (e.g. a SLURM array index, or the command
`--dry_run` prints, through `textchem-tpu ... -- ARGS`), then `--collect_only` once. The results:
`sweep.csv`, `sweep.md` (parameters, tokens seen, steps, wall time, every final metric) and plots
(PNG and SVG) of each task's metrics against parameters and tokens, the loss curves, and the
multi-task gain on cross-domain tasks against size (the paper's comparison).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from textchem_jax import figures, run_results
from textchem_jax.catalogue import DOMAINS, TASKS, task_of
from textchem_jax.cli import command
from textchem_jax.paths import expand_user, is_remote, makedirs, write_whole

POINT_FILE = "sweep-point.json"
MIXTURE_SHORT_NAMES = ("standard", "augm", "mono", "cross")
# Each variant whole, as an e2-CLM base's own settings stay: `mean` would keep a frozen base's encoders frozen.
E2CLM_VARIANTS = {
    "shared": {"shared": True, "aggregation": "'mean'", "freeze_text": False, "freeze_chemistry": False},
    "mean": {"shared": False, "aggregation": "'mean'", "freeze_text": False, "freeze_chemistry": False},
    "cross_attention": {"shared": False, "aggregation": "'cross_attention'", "freeze_text": False,
                        "freeze_chemistry": False},
    "select": {"shared": False, "aggregation": "'select'", "freeze_text": False, "freeze_chemistry": False},
    "frozen": {"shared": False, "aggregation": "'mean'", "freeze_text": True, "freeze_chemistry": True},
}
E2CLM_MODEL_FILE = "models/e2clm_small.gin"
_DIMENSIONS = ("d_model", "d_kv", "d_ff", "num_heads", "num_encoder_layers", "num_decoder_layers")
# Axes that set the model's size: the x of the scaling plots, not a line of their own.
_SIZE_AXES = ("size", "width")
_RESUMABLE = ("MODEL_DIR", "TRAIN_STEPS")  # what may change while a point's checkpoints still go on


@dataclasses.dataclass(frozen=True)
class Base:
    """What the sweep needs of the base configuration (read by parsing its gin files once)."""

    mixture: str
    train_steps: int
    dimensions: Mapping[str, int]
    feed_forward: str
    tie_word_embeddings: bool
    e2clm: bool
    # What an e2-CLM point carries over besides the dimensions: the T5 config's other fields (dtypes, scan, remat,
    # relative attention, layer norm epsilon) and the adapter's loss settings (z_loss, label_smoothing).
    t5_settings: Mapping[str, object] = dataclasses.field(default_factory=dict)
    model_settings: Mapping[str, object] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Point:
    values: tuple[tuple[str, str], ...]  # (axis, value) in grid order
    bindings: tuple[str, ...]  # gin `NAME=VALUE`
    # Model files read BEFORE the base's gin files, which then override their macros (DROPOUT_RATE, VOCABULARY);
    # the bindings name the model. Read after, e2clm_small.gin's DROPOUT_RATE = 0.1 replaced quickstart's 0.0.
    gin_files: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return "_".join(f"{axis}-{re.sub(r'[^A-Za-z0-9._+-]', '', value)}" for axis, value in self.values) or "base"

    @property
    def label(self) -> str:
        return " ".join(f"{axis}={value}" for axis, value in self.values)


def parse_axis(text: str) -> tuple[str, list[str]]:
    """`"width=32,64"` -> ("width", ["32", "64"])."""
    name, sep, values = text.partition("=")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not name.strip() or not items:
        raise ValueError(f"--grid={text!r}: expected AXIS=V1,V2,... (e.g. --grid=width=32,64,128)")
    return name.strip(), items


def mixture_name(value: str, base_mixture: str) -> str:
    """A short mixture name in the base mixture's family (demo or real data), else the name as given."""
    if value not in MIXTURE_SHORT_NAMES:
        return value
    family = "textchem_demo" if base_mixture.startswith("textchem_demo") else "textchem"
    return f"{family}_{value}"


def _axis_setting(axis: str, value: str, base: Base, target: str) -> tuple[list[str], list[str]]:
    """(gin bindings, model gin files to read before the base's) of one axis value."""
    from textchem_jax.models import config

    if axis == "size":
        version = "1.1" if base.feed_forward == "gated-gelu" else "1.0"
        dims = config.preset_dimensions(value, version)
        return [f"{target}.{k}={v}" for k, v in dims.items()], []
    if axis == "width":
        if not value.isdigit() or int(value) < 1:  # 0 and -64 passed the check, to fail (or not) in each point's model
            raise ValueError(f"--grid=width: {value!r} is not a width; give d_model values, positive whole numbers")
        width = int(value)
        ratio = base.dimensions["d_ff"] / base.dimensions["d_model"]
        heads = max(1, width // base.dimensions["d_kv"])
        dims = {"d_model": width, "d_ff": max(1, round(ratio * width)), "num_heads": heads}
        return [f"{target}.{k}={v}" for k, v in dims.items()], []
    if axis == "mixture":
        return [f"MIXTURE_OR_TASK_NAME={mixture_name(value, base.mixture)!r}"], []
    if axis == "data_fraction":
        percent = float(value) * 100
        if not 0 < percent <= 100:
            raise ValueError(f"--grid=data_fraction: {value} is not in (0, 1]")
        return [f"train/run_config.DatasetConfig.split='train[:{percent:g}%]'"], []
    if axis == "seed":
        return [f"RANDOM_SEED={int(value)}"], []
    if axis == "e2clm":
        if value not in E2CLM_VARIANTS:
            raise ValueError(f"--grid=e2clm: unknown variant {value!r}; known: {', '.join(E2CLM_VARIANTS)}")
        variant = [f"e2clm.e2clm_config.{k}={v}" for k, v in E2CLM_VARIANTS[value].items()]
        if base.e2clm:  # the base's own e2-CLM settings (vocabulary, embeddings, checkpoints) stay
            return variant, []
        loss = [f"adapters.E2ClmModel.{k}={v!r}" for k, v in base.model_settings.items()]  # the base's z_loss, ...
        return ["MODEL=@adapters.E2ClmModel()", *loss, *variant], [E2CLM_MODEL_FILE]
    if axis.isupper() or "." in axis:
        return [f"{axis}={value}"], []
    raise ValueError(f"--grid={axis}: unknown axis; use size, width, mixture, data_fraction, e2clm, seed or a gin "
                     "binding (an UPPER_CASE macro or a configurable.parameter)")  # fmt: skip


def expand(axes: Sequence[tuple[str, Sequence[str]]], base: Base) -> list[Point]:
    """Every point of the grid (the product of the axes), with the gin bindings that make it."""
    e2clm = base.e2clm or any(axis == "e2clm" for axis, _ in axes)
    target = "e2clm.e2clm_config" if e2clm else "config.t5_config"
    points = []
    for combination in itertools.product(*[[(axis, v) for v in values] for axis, values in axes]):
        bindings, files = [], []
        if e2clm and not base.e2clm:  # e2-CLM points get the base model's T5 layout unless an axis sets it
            bindings += [f"{target}.{k}={v}" for k, v in base.dimensions.items()]
            bindings += [f"{target}.size='tiny'", f"{target}.feed_forward={base.feed_forward!r}",
                         f"{target}.tie_word_embeddings={base.tie_word_embeddings}"]  # fmt: skip
            bindings += [f"{target}.{k}={v!r}" for k, v in base.t5_settings.items()]
        for axis, value in combination:
            try:
                more_bindings, more_files = _axis_setting(axis, value, base, target)
            except ValueError as error:  # e.g. int('abc'): name the axis and its value
                raise ValueError(str(error) if str(error).startswith("--grid") else f"--grid={axis}: {value!r}: {error}") from None
            bindings += more_bindings
            files += more_files
        points.append(Point(tuple(combination), tuple(bindings), tuple(dict.fromkeys(files))))
    if len({p.name for p in points}) != len(points):
        raise ValueError("two grid points share a folder name: give each axis distinct values")
    return points


def _import_task_module() -> None:
    """The parsed configuration's MIXTURE_OR_TASK_MODULE imported, as each point's textchem-train will (the working
    directory on sys.path): the user's own tasks and mixtures read as unknown names, and every sweep was refused."""
    import gin

    from textchem_jax.run_config import import_task_module

    try:
        module = gin.query_parameter("%MIXTURE_OR_TASK_MODULE")
    except ValueError:  # no run file binds the macro
        module = None
    import_task_module(module)


def read_base(gin_files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str], sweep_dir: str) -> Base:
    """Parses the base configuration once (a clear error before any point starts) and reads what the axes need."""
    import gin

    from textchem_jax import launch
    from textchem_jax.models.adapters import E2ClmModel
    from textchem_jax.run_config import register_our_tasks

    register_our_tasks()

    launch.parse_gin(gin_files, [*bindings, f"MODEL_DIR={os.path.join(sweep_dir, 'base')!r}"], search_paths)
    _import_task_module()
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
    t5 = model.t5_config
    # vocab_size and dropout_rate follow VOCABULARY and DROPOUT_RATE, which the base's files bind; a field at its
    # default needs no binding
    set_apart = (*_DIMENSIONS, "feed_forward", "tie_word_embeddings", "vocab_size", "dropout_rate")
    base = Base(
        mixture=gin.query_parameter("%MIXTURE_OR_TASK_NAME"),
        train_steps=int(gin.query_parameter("%TRAIN_STEPS")),
        dimensions={k: getattr(t5, k) for k in _DIMENSIONS},
        feed_forward=t5.feed_forward,
        tie_word_embeddings=t5.tie_word_embeddings,
        e2clm=isinstance(model, E2ClmModel),
        t5_settings={f.name: getattr(t5, f.name) for f in dataclasses.fields(t5)
                     if f.name not in set_apart and getattr(t5, f.name) != f.default},  # fmt: skip
        model_settings={f.name: getattr(model, f.name) for f in dataclasses.fields(model)
                        if f.name not in ("config", "vocabulary")},  # fmt: skip
    )
    gin.clear_config()
    return base


def check_points(points: Sequence[Point], gin_files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str],
                 sweep_dir: str) -> dict[str, dict]:  # fmt: skip
    """Parses every point's configuration as its textchem-train will, and looks up its mixture: a misspelt
    axis, value or mixture is one error before any point trains, not a failure at each point's start. Returns each
    point's `configuration` by point name, for its sweep-point.json."""
    import gin

    from textchem_jax import launch
    from textchem_jax.run_config import mixture_or_task

    configurations = {}
    for point in points:
        model_dir = os.path.join(sweep_dir, point.name)
        try:
            launch.parse_gin([*point.gin_files, *gin_files], [*bindings, *point.bindings, f"MODEL_DIR={model_dir!r}"],
                             search_paths, warn_unused_macros=False)  # said once, by read_base
            _import_task_module()
            mixture_or_task(gin.query_parameter("%MIXTURE_OR_TASK_NAME"))
            configurations[point.name] = configuration([*point.gin_files, *gin_files], search_paths)
        except (ValueError, launch.ConfigError) as error:
            raise ValueError(f"point {point.label or point.name}: {error}") from None
        finally:
            gin.clear_config()
    return configurations


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def configuration(gin_files: Sequence[str], search_paths: Sequence[str]) -> dict:
    """What the parsed gin configuration resolves to (`digest`: every binding but the _RESUMABLE macros; comments
    and layout do not count) and a digest of each gin file read, includes too (`files`: to name the one that
    changed). Recorded in a point's sweep-point.json: a LEARNING_RATE appended to the base gin file between two
    runs of a sweep went unnoticed (finished points were skipped with their old settings; a resumed one trained on
    at 1e-4 after 3e-3, and its config.gin claimed 1e-4 for the whole run)."""
    import gin

    from textchem_jax import launch

    statements = (s.strip() for s in re.split(r"\n(?=\S)", gin.config_str()))  # a long value goes on indented lines
    kept = [s for s in statements if s and not s.startswith("#") and s.partition(" = ")[0] not in _RESUMABLE]
    sources = launch.gin_sources([expand_user(f) for f in gin_files], launch.gin_search_paths(search_paths))
    return {"digest": _digest("\n".join(kept)), "files": {path: _digest(text) for path, text in sources}}


def train_arguments(point: Point, model_dir: str, passthrough: Sequence[str]) -> list[str]:
    """The `textchem-train` arguments of a point: its gin files (before the base's), the base flags, its bindings and
    its MODEL_DIR."""
    return [*[f"--gin_file={f}" for f in point.gin_files], *passthrough, *[f"--gin.{b}" for b in point.bindings],
            f"--gin.MODEL_DIR={model_dir!r}"]  # fmt: skip


def _read_point_file(point_dir: str) -> dict:
    import tensorflow as tf

    path = os.path.join(point_dir, POINT_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError:  # a write cut short: the point counts as not finished and is run (resumed) again
        return {}


def _write_point_file(point_dir: str, record: dict) -> None:
    """Whole or not at all (written aside, then renamed): a running point's record is rewritten as its log
    advances, and a SIGKILL that lands in a write left it cut short, its arguments and time lost."""
    makedirs(point_dir)
    path = os.path.join(point_dir, POINT_FILE)
    write_whole(path, json.dumps(record, indent=1))


class Terminated(Exception):
    """SIGTERM to the sweep (`kill`, a cluster's stop): raised in the main thread, as Ctrl-C's KeyboardInterrupt is."""


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the running point is saving its step
    raise Terminated


def _stopped(stop: BaseException) -> str:
    return "terminated" if isinstance(stop, Terminated) else "interrupted"


# The lines of a point's console that the sweep's own console shows (all go to the point's train.log): its training,
# and its evaluation's decoding progress and heading, not the metric tables. The final evaluation was the longest
# silent stretch.
_SHOWN_LINES = re.compile(r"step |resumed from|training stopped|decoding |\S+: round trip \(forward model\): |"
                          r"evaluation at step ")  # fmt: skip
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_FINAL_EVALUATION_CUT = " during the final evaluation: "  # textchem-train's line for a signal there


def _stops_with_the_sweep():
    """A `preexec_fn` that has the kernel send the point's textchem-train a SIGTERM when the sweep dies, even by
    SIGKILL, so that it saves its step and stops as on a preemption: it trained on, unseen, until its next line hit
    the dead pipe, and died there unsaved. Linux only (None elsewhere). It runs between fork and exec, so it only
    calls what is loaded before."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl, sweep = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()

    def request() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != sweep:  # the sweep died before the request: nothing trained yet, nothing to save
            os._exit(128 + signal.SIGTERM)

    return request


def _pause_with_the_sweep(process: subprocess.Popen):
    """A SIGTSTP handler (Ctrl-Z) that stops the point's process group with the sweep and continues it with the
    sweep (`fg`, `bg`): in a process group of its own, the point no longer gets the terminal's signals."""

    def pause(signum, frame) -> None:
        with contextlib.suppress(ProcessLookupError):  # the point has ended
            os.killpg(process.pid, signal.SIGSTOP)
        os.kill(os.getpid(), signal.SIGSTOP)  # returns once the sweep is continued
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGCONT)

    return pause


def run_point(point: Point, sweep_dir: str, passthrough: Sequence[str], *, index: int, total: int,
              verbose: bool = False, configuration: Mapping | None = None) -> bool:  # fmt: skip
    """Trains and evaluates one point in its own `textchem-train` process unless it finished with the same
    arguments and `configuration` (check_points') before; returns whether it is finished."""
    import tensorflow as tf

    point_dir = os.path.join(sweep_dir, point.name)
    arguments = train_arguments(point, point_dir, passthrough)
    record = _read_point_file(point_dir)
    prefix = f"[{index + 1}/{total}] {point.label or point.name}"
    changed = _changed_settings(record, arguments, configuration)
    if record.get("status") == "done" and not changed and _nothing_further(record.get("arguments"), arguments):
        print(f"{prefix}: finished before, skipped", flush=True)
        return True
    makedirs(point_dir)
    log_path = os.path.join(point_dir, "train.log")
    earlier = 0.0 if changed else record.get("wall_seconds", 0.0)  # training on to more steps: its time counts on
    if tf.io.gfile.exists(log_path):  # the attempt before (killed, failed or configured otherwise) stays readable
        tf.io.gfile.copy(log_path, os.path.join(point_dir, "train.previous.log"), overwrite=True)
    record = {"point": dict(point.values), "arguments": arguments, "configuration": configuration}
    # Said before training: a point stopped midway is known to have checkpoints of these arguments.
    _write_point_file(point_dir, {**record, "status": "running", "wall_seconds": earlier})
    print(f"{prefix}: training (log: {log_path})", flush=True)
    start = time.perf_counter()
    # The point's console comes through a pipe whose read end textchem-train holds too (Linux): its lines after the
    # sweep is killed (its preemption's) are not a BrokenPipeError that ends it before it saves.
    read_end, write_end = os.pipe()
    posix = os.name == "posix"
    try:
        # -P: the sweep's folder is not put first on the point's path, where a user's own `tasks.py` hid ours.
        # Its own process group: the sweep passes on each Ctrl-C it gets, once. A SIGINT to the sweep's pid alone
        # reached the sweep only (its point trained to the end, recorded "interrupted"), and one passed on besides
        # the terminal's would be a second Ctrl-C, which stops textchem-train unsaved. No terminal input: reading
        # it from a background process group stops the reader.
        process = subprocess.Popen([sys.executable, "-P", "-m", "textchem_jax.train", *arguments], stdout=write_end,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   process_group=0 if posix else None, preexec_fn=_stops_with_the_sweep(),
                                   pass_fds=(read_end,) if sys.platform.startswith("linux") else ())  # fmt: skip
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    # a handler only from the main thread (Python's rule): a notebook's thread keeps the default
    pausing = posix and threading.current_thread() is threading.main_thread()
    paused = signal.signal(signal.SIGTSTP, _pause_with_the_sweep(process)) if pausing else None
    lines = []
    flush_period = 30.0 if is_remote(log_path) else 0.0  # `tail -f` follows a local log; gs:// uploads it whole
    # `open` of textchem-train's pipe (local only); the log through gfile, written whole (gs:// has no append)
    with open(read_end, errors="replace") as output, tf.io.gfile.GFile(log_path, "w") as log:  # local only
        flushed = time.monotonic()
        try:
            for line in output:
                log.write(line)
                if time.monotonic() - flushed >= flush_period:
                    log.flush()
                    # The time so far, as the log advances: a sweep killed (SIGKILL, a lost node) counts its attempt up
                    # to here. A point killed after 42 s showed 55.57 s after its rerun, the second attempt's alone.
                    _write_point_file(point_dir, {**record, "status": "running",
                                                  "wall_seconds": time.perf_counter() - start + earlier})  # fmt: skip
                    flushed = time.monotonic()
                lines.append(line)
                if verbose or _SHOWN_LINES.match(line):
                    print(f"    {line.rstrip()}", flush=True)
        except (KeyboardInterrupt, Terminated) as stop:  # textchem-train saves its step, then exits: waited for
            process.send_signal(signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)
            print(f"{prefix}: {_stopped(stop)}; waiting for textchem-train to save its checkpoint (Ctrl-C again stops "
                  "at once)", file=sys.stderr, flush=True)  # fmt: skip
            try:
                rest = output.read()
                process.wait()
            except KeyboardInterrupt:  # Ctrl-C again: textchem-train stops at once, unsaved, as the sweep does
                process.send_signal(signal.SIGINT)
                raise
            log.write(rest)
            print("".join(f"    {line}\n" for line in rest.splitlines()
                          if line.startswith(("interrupted", "preempted")) or _FINAL_EVALUATION_CUT in line),
                  end="", flush=True)  # what textchem-train saved, and what a rerun does  # fmt: skip
            # 0 and no "preempted: saved step" (a SIGTERM's save exits 0 too): it had finished, final evaluation
            # included, before the signal took effect; recorded "interrupted", the rerun trained it again
            preempted = any(line.startswith("preempted: ") for line in [*lines, *rest.splitlines()])
            status = "done" if process.returncode == 0 and not preempted else _stopped(stop)
            _write_point_file(point_dir, {**record, "status": status, "returncode": process.returncode,
                                          "wall_seconds": time.perf_counter() - start + earlier})  # fmt: skip
            raise
        finally:
            if pausing:
                signal.signal(signal.SIGTSTP, paused)
    code = process.wait()
    seconds = time.perf_counter() - start + earlier
    status = "done" if code == 0 else "failed"
    _write_point_file(point_dir, {**record, "status": status, "returncode": code, "wall_seconds": seconds})
    if code == 0:
        print(f"{prefix}: done in {seconds:.0f} s", flush=True)
        return True
    tail = "".join(lines[-15:])
    print(f"{prefix}: textchem-train exited with {code}; its last lines ({log_path}):\n{tail}", file=sys.stderr, flush=True)
    return False


def _settings(arguments: Sequence[str] | None, ignored: Sequence[str] = ("MODEL_DIR",)) -> list[str] | None:
    """A point's textchem-train arguments less the `ignored` macros' flags: less MODEL_DIR, a sweep folder copied
    or moved is the same sweep; less TRAIN_STEPS too, training on to more steps continues the same run."""
    flags = {f"--gin.{macro}" for macro in ignored}
    return None if arguments is None else [a for a in arguments if a.partition("=")[0] not in flags]


def _nothing_further(before: Sequence[str] | None, now: Sequence[str]) -> bool:
    """Whether a point finished with the arguments `before` has nothing to do with those of `now`: the same, or a
    TRAIN_STEPS it had reached. A smaller TRAIN_STEPS relaunched it to say "nothing to train", and its record then
    named steps its run does not have."""
    if _settings(before) == _settings(now):
        return True
    steps = [_flag_value(arguments, "TRAIN_STEPS") for arguments in (before or [], now)]
    same = _settings(before, _RESUMABLE) == _settings(now, _RESUMABLE)
    return same and all(value is not None and value.isdigit() for value in steps) and int(steps[1]) <= int(steps[0])


def _flag_value(arguments: Sequence[str], macro: str) -> str | None:
    """The value of `--gin.MACRO=` among textchem-train arguments (the last one), or None."""
    values = [a.partition("=")[2] for a in arguments if a.partition("=")[0] == f"--gin.{macro}"]
    return values[-1] if values else None


def _changed_settings(record: Mapping, arguments: Sequence[str], configuration: Mapping | None) -> str | None:
    """How a point's settings now (its textchem-train arguments, what its gin configuration resolves to) differ
    from those of its record, the _RESUMABLE ones aside, or None: the same, or nothing recorded (a record written
    before configurations were has its arguments compared only)."""
    before, now = _settings(record.get("arguments"), _RESUMABLE), _settings(arguments, _RESUMABLE)
    if before is not None and before != now:
        return (f"other arguments ({' '.join(a for a in before if a not in now) or 'no other flags'} then, "
                f"{' '.join(a for a in now if a not in before) or 'no other flags'} now)")
    then = record.get("configuration")
    if before is None or not then or not configuration or then["digest"] == configuration["digest"]:
        return None
    files = [path for path in dict.fromkeys([*then["files"], *configuration["files"]])
             if then["files"].get(path) != configuration["files"].get(path)]  # fmt: skip
    return (f"other contents of its gin files ({', '.join(files)} changed since)" if files else
            "another gin configuration from the same gin files and flags (textchem_jax's configurables changed)")


def changed_settings(point: Point, sweep_dir: str, passthrough: Sequence[str],
                     configuration: Mapping | None = None) -> str | None:  # fmt: skip
    """How this run's settings for a point (arguments, and its gin files' `configuration`) differ from those its
    checkpoints were trained with, or None (the same, or nothing trained yet): resuming would continue those
    weights under other settings, and the point would then be recorded as done with settings it was not trained
    with. A changed flag and a changed gin file are refused alike."""
    point_dir = os.path.join(sweep_dir, point.name)
    arguments = train_arguments(point, point_dir, passthrough)
    change = _changed_settings(_read_point_file(point_dir), arguments, configuration)
    return change if change and run_results.latest_step(point_dir) else None


def point_row(point: Point, sweep_dir: str) -> dict:
    """One row of the sweep table: the point's axes, size, tokens, steps, wall time and final metrics."""
    point_dir = os.path.join(sweep_dir, point.name)
    train_scalars = run_results.scalars(os.path.join(point_dir, "train"))
    history = run_results.metric_history(point_dir)
    step, metrics = run_results.final_metrics(history)
    record = _read_point_file(point_dir)
    row = {"point": point.name, **dict(point.values)}
    row["status"] = record.get("status", "not run")
    row["params"] = run_results.parameter_count(point_dir)
    row["tokens_seen"] = run_results.tokens_seen(train_scalars)
    row["steps"] = run_results.latest_step(point_dir) or None
    row["wall_seconds"] = record.get("wall_seconds")
    final_loss = train_scalars.get("loss")
    row["final_train_loss"] = final_loss[-1][1] if final_loss else None
    eval_loss = run_results.teacher_forced_scalars(point_dir).get("loss")
    row["final_eval_loss"] = eval_loss[-1][1] if eval_loss else None
    row["metrics_step"] = step
    for task, values in metrics.items():
        for name, value in values.items():
            row[f"{task_of(task) or task}/{name}"] = value
    row["_loss_curve"] = final_loss or []
    # Each evaluation's metrics against the tokens seen by its step (the run's mean tokens per step).
    per_step = row["tokens_seen"] / row["steps"] if row["tokens_seen"] and row["steps"] else None
    row["_by_tokens"] = {}
    for task, evaluations in history.items() if per_step else ():
        for evaluation in evaluations:
            for name, value in evaluation.items():
                if name != "step":
                    row["_by_tokens"].setdefault(f"{task_of(task) or task}/{name}", []).append((evaluation["step"] * per_step, value))
    return row


def _columns(rows: Sequence[Mapping]) -> list[str]:
    columns = []
    for row in rows:
        columns += [key for key in row if not key.startswith("_") and key not in columns]
    fixed = [c for c in columns if "/" not in c]
    metric = sorted((c for c in columns if "/" in c), key=lambda c: (TASKS.index(c.split("/")[0]) if c.split("/")[0] in TASKS else 99, c))
    return fixed + metric


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if value >= 1e4 else str(value)
    return str(value)


def write_tables(rows: Sequence[Mapping], sweep_dir: str) -> tuple[str, str]:
    """`sweep.csv` (machine-readable; empty cell: n/a) and `sweep.md` (one row per point, n/a spelled out)."""
    import tensorflow as tf

    from textchem_jax import provenance
    from textchem_jax.metrics.tables import markdown_table

    columns = _columns(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    csv_path, md_path = os.path.join(sweep_dir, "sweep.csv"), os.path.join(sweep_dir, "sweep.md")
    with tf.io.gfile.GFile(csv_path, "w") as f:
        f.write(buffer.getvalue())
    table = markdown_table(columns, [[_cell(row.get(c)) for c in columns] for row in rows])
    # The versions each point recorded when it trained, where they are not these (a sweep collected after an upgrade)
    other = sorted({f"{row['point']}: {name} {then}" for row in rows
                    for entry in provenance.history(os.path.join(sweep_dir, row["point"]))[-1:]
                    for name, (then, _) in provenance.changed(entry.get("versions", {})).items()})  # fmt: skip
    trained = f"\n\nPoints trained with other versions: {'; '.join(other)}" if other else ""
    with tf.io.gfile.GFile(md_path, "w") as f:
        f.write(f"# Sweep {sweep_dir}\n\n{table}\n\nTables written with {provenance.versions_line()}{trained}\n")
    return csv_path, md_path


def _line_label(row: Mapping, axes: Sequence[str], drop: Sequence[str]) -> str:
    return " ".join(f"{a}={row[a]}" for a in axes if a not in drop) or "all points"


def _mean_by_x(points: list[tuple[float, float | None]]) -> list[tuple[float, float]]:
    """Points sharing an x (seeds of one configuration) averaged."""
    grouped: dict[float, list[float]] = {}
    for x, y in points:
        if x is not None and y is not None and not math.isnan(y):
            grouped.setdefault(x, []).append(y)
    return [(x, sum(ys) / len(ys)) for x, ys in sorted(grouped.items())]


def write_plots(rows: Sequence[Mapping], axes: Sequence[str], sweep_dir: str) -> list[str]:
    """Each task's metrics vs parameters and vs tokens seen, the loss curves and the multi-task gain; the
    PNG paths written (an SVG beside each)."""
    written = []
    metric_columns = [c for c in _columns(rows) if "/" in c]
    for task in dict.fromkeys(c.split("/")[0] for c in metric_columns):
        names = [c for c in metric_columns if c.startswith(task + "/")]
        by_params, by_tokens = {}, {}
        for name in names:
            series: dict[str, list] = {}
            for row in rows:  # one line per setting of the other axes, seeds averaged
                series.setdefault(_line_label(row, axes, (*_SIZE_AXES, "seed")), []).append((row.get("params"), row.get(name)))
            by_params[name.split("/")[1]] = {label: _mean_by_x(points) for label, points in series.items()}
            by_tokens[name.split("/")[1]] = {row["point"]: _mean_by_x(row["_by_tokens"].get(name, [])) for row in rows}
        for panels, stem, label in ((by_params, "params", "parameters"), (by_tokens, "tokens", "tokens seen")):
            title = f"{task}: final metrics vs parameters" if stem == "params" else f"{task}: each evaluation vs tokens seen"
            saved = figures.plot_lines(os.path.join(sweep_dir, f"{task}_vs_{stem}"), panels, xlabel=label, log_x=True, title=title)
            written += [saved[0]] if saved else []
    curves = {row["point"]: [(s, v) for s, v in row["_loss_curve"]] for row in rows}
    saved = figures.plot_lines(os.path.join(sweep_dir, "loss_curves"), {"train loss": curves}, xlabel="step", columns=1)
    written += [saved[0]] if saved else []
    gains = multitask_gains(rows, axes)
    if gains:
        saved = figures.plot_lines(os.path.join(sweep_dir, "multitask_gain"), gains, xlabel="parameters", log_x=True,
                                   reference=0.0, title="gain of multi-task over cross-domain-only training")  # fmt: skip
        written += [saved[0]] if saved else []
    return written


def multitask_gains(rows: Sequence[Mapping], axes: Sequence[str]) -> dict[str, dict[str, list]]:
    """The paper's comparison: on each cross-domain task (text2mol, mol2text), a mixture's final metric minus
    that of the mixture with the fewest tasks (cross-domain only, or the single task), at the same other
    settings, against parameters. Empty without a mixture axis."""
    if "mixture" not in axes:
        return {}
    others = [a for a in axes if a not in ("mixture", "seed")]
    panels: dict[str, dict[str, list]] = {}
    for task in (t for t in TASKS if DOMAINS[t][0] != DOMAINS[t][1]):
        groups: dict[tuple, list[Mapping]] = {}
        for row in rows:
            if any(key.startswith(task + "/") for key in row):
                groups.setdefault(tuple(row[a] for a in others), []).append(row)
        for group in groups.values():
            tasks_in = {id(r): sum(1 for t in TASKS if any(k.startswith(t + "/") for k in r)) for r in group}
            fewest = min(tasks_in.values())
            baseline = [r for r in group if tasks_in[id(r)] == fewest]
            for row in group:
                if tasks_in[id(row)] == fewest:
                    continue
                for key in (k for k in row if k.startswith(task + "/")):
                    base_values = [b.get(key) for b in baseline if b.get(key) is not None]
                    if row.get(key) is None or not base_values:
                        continue
                    gain = row[key] - sum(base_values) / len(base_values)
                    label = f"{row['mixture']} vs {baseline[0]['mixture']}"
                    panels.setdefault(key, {}).setdefault(label, []).append((baseline[0].get("params"), gain))
    from textchem_jax.metrics.tables import LOWER_IS_BETTER

    def title(name: str) -> str:
        return f"{name} (lower is better)" if name.split("/")[1] in LOWER_IS_BETTER else name

    return {title(name): {label: _mean_by_x(points) for label, points in series.items()} for name, series in panels.items()}


def collect(points: Sequence[Point], axes: Sequence[str], sweep_dir: str) -> tuple[list[dict], list[str]]:
    """Writes the table of every point (an unfinished one says so in `status`) and the plots of the finished
    ones; returns (finished rows, files written)."""
    rows = [point_row(p, sweep_dir) for p in points]
    finished = [r for r in rows if r["status"] == "done"]
    files = list(write_tables(rows, sweep_dir))
    files += write_plots(finished, axes, sweep_dir)
    return finished, files


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textchem-sweep", description=__doc__.split("\n\n")[0],
                                     epilog="Other arguments (--gin_file, --gin.NAME=VALUE, --gin_search_paths, "
                                     "--tfds_data_dir) go to every point's textchem-train.")  # fmt: skip
    parser.add_argument("--sweep_dir", required=True, help="folder of the sweep (local or gs://): one MODEL_DIR per point")
    parser.add_argument("--grid", action="append", default=[], help="AXIS=V1,V2,... (repeatable)")
    parser.add_argument("--point", type=int, help="run only this point (0-based; one cluster job per point)")
    parser.add_argument("--collect_only", action="store_true", help="write tables and plots of finished points, train nothing")
    parser.add_argument("--dry_run", action="store_true", help="print each point's textchem-train command, run nothing")
    parser.add_argument("--verbose", action="store_true", help="show every line of each point's training")
    return parser


def _gin_arguments(rest: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """(gin files, bindings, search paths) of the passed-through textchem-train flags, for reading the base."""
    from textchem_jax import launch

    bindings, others = launch.split_gin_flags(rest)
    files, search = [], []
    for arg in others:
        name, _, value = arg.partition("=")
        if name == "--gin_file":
            files.append(value)
        elif name == "--gin_bindings":
            bindings.append(value)
        elif name == "--gin_search_paths":
            search += value.split(",")
        elif name != "--tfds_data_dir":
            raise ValueError(f"unknown argument {arg!r}: textchem-sweep --help lists its own; textchem-train's go "
                             "through as --flag=value (--gin_file=..., --gin.NAME=VALUE, --gin_search_paths=...)")
    return files, bindings, search


@command
def main(argv: Sequence[str] | None = None) -> int:
    import shlex

    from textchem_jax import launch

    args, passthrough = _parser().parse_known_args(argv)
    args.sweep_dir = expand_user(args.sweep_dir)
    if not args.verbose:
        launch.quiet_libraries()
    try:
        axes = [parse_axis(text) for text in args.grid]
        files, bindings, search = _gin_arguments(passthrough)
        if not files:
            raise ValueError("give the base configuration, e.g. --gin_file=experiments/quickstart.gin")
        base = read_base(files, bindings, search, args.sweep_dir)
        points = expand(axes, base)
        configurations = check_points(points, files, bindings, search, args.sweep_dir)
    except (ValueError, launch.ConfigError) as error:
        print(f"textchem-sweep: {error}", file=sys.stderr)
        return 2
    names = [axis for axis, _ in axes]
    print(f"sweep of {len(points)} points in {args.sweep_dir}: {', '.join(f'{a} ({len(v)})' for a, v in axes) or 'the base only'}",
          flush=True)  # fmt: skip
    chosen = range(len(points)) if args.point is None else [args.point]
    if args.point is not None and not 0 <= args.point < len(points):
        print(f"textchem-sweep: --point={args.point} is not one of the grid's 0..{len(points) - 1}", file=sys.stderr)
        return 2
    if args.dry_run:
        for i in chosen:
            point = points[i]
            arguments = train_arguments(point, os.path.join(args.sweep_dir, point.name), passthrough)
            print(f"[{i}] {point.label}: textchem-train {shlex.join(arguments)}")
        return 0
    import tensorflow as tf

    if args.collect_only and not tf.io.gfile.isdir(args.sweep_dir):
        print(f"textchem-sweep: no sweep at {args.sweep_dir} to collect: run it first (without --collect_only)", file=sys.stderr)
        return 2
    changed = [(i, c) for i in chosen if not args.collect_only
               and (c := changed_settings(points[i], args.sweep_dir, passthrough, configurations[points[i].name]))]
    for i, change in changed:
        print(f"textchem-sweep: point [{i}] {points[i].label or points[i].name} was trained in "
              f"{os.path.join(args.sweep_dir, points[i].name)} with {change}: resuming would mix them. "
              "Give a new --sweep_dir, or delete that point's folder to train it anew", file=sys.stderr)  # fmt: skip
    if changed:
        return 2
    failed = []
    if not args.collect_only:
        previous = signal.signal(signal.SIGTERM, _terminate)  # while points train: then as before
        try:
            for i in chosen:
                if not run_point(points[i], args.sweep_dir, passthrough, index=i, total=len(points),
                                 verbose=args.verbose, configuration=configurations[points[i].name]):
                    failed.append(points[i].label)
        except (KeyboardInterrupt, Terminated) as stop:
            print(f"textchem-sweep: {_stopped(stop)}; rerun the same command to go on (finished points are skipped, "
                  f"the {_stopped(stop)} one resumes from its checkpoint)", file=sys.stderr, flush=True)  # fmt: skip
            return 143 if isinstance(stop, Terminated) else 130
        finally:
            signal.signal(signal.SIGTERM, previous)
    if args.point is not None and not args.collect_only:
        return 1 if failed else 0  # one job of many: the last one collects
    rows, written = collect(points, names, args.sweep_dir)
    print(f"{len(rows)} of {len(points)} points finished; tables and plots:")
    for path in written:
        print(f"  {path}")
    if failed:
        print(f"textchem-sweep: {len(failed)} point(s) failed: {'; '.join(failed)} (rerun to retry them)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
