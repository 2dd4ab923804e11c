"""Run configuration objects, T5X style: what a run reads (`DatasetConfig`) and keeps (`CheckpointConfig`).

A run file binds one `DatasetConfig` per gin scope (`train/`, `train_eval/`, `infer_eval/`, and
`infer/` for `textchem-infer`), so an experiment changes a split, a batch size or packing with one
binding instead of a keyword argument of `train()`. `get_dataset` turns a config into this host's
batches of the features a model adapter reads, through the adapter's own feature converter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """One SeqIO mixture or task split, as a model will see it (T5X's `utils.DatasetConfig`).

    `seed` None takes the run's random seed; `module` is a module that registers the user's own
    tasks (T5X's MIXTURE_OR_TASK_MODULE); `num_examples` caps inference evaluation (None: all).
    """

    mixture_or_task_name: str | None
    task_feature_lengths: Mapping[str, int]
    split: str
    batch_size: int
    shuffle: bool = True
    seed: int | None = None
    pack: bool = True
    use_cached: bool = False
    module: str | None = None
    num_examples: int | None = None

    def __post_init__(self):
        """Said at configuration time; a wrong kind of value surfaced as an AttributeError or a tf.data error."""
        lengths = self.task_feature_lengths
        if not isinstance(lengths, Mapping) or not all(isinstance(n, int) and n > 0 for n in lengths.values()):
            raise ValueError(f"task_feature_lengths (gin TASK_FEATURE_LENGTHS) is {lengths!r}: give a dict of positive "
                             "lengths, e.g. {'inputs': 512, 'targets': 512}")  # fmt: skip
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size (gin BATCH_SIZE) is {self.batch_size!r}: give a positive number of examples")
        if self.num_examples is not None and (not isinstance(self.num_examples, int) or self.num_examples < 0):
            raise ValueError(f"num_examples is {self.num_examples!r}: give a count of examples, or None for all")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Save every `period` steps, keep the newest `keep`; start a new run from `initial_checkpoint_path`:
    ours or a `textchem-convert` import (TRAIN_STEPS counts on from its step, as in T5X), a T5 checkpoint
    for an e2-CLM model, or {part: T5 checkpoint} (`model_loading.initial_params`). `restore_fallback`: on resuming, a step that
    fails its checksums or cannot be read is set aside and the one before it restored (`checkpoints.Checkpoints`)."""

    period: int = 1000
    keep: int | None = 3
    initial_checkpoint_path: str | Mapping[str, str] | None = None
    restore_fallback: bool = True  # a corrupt latest step: resume from the one before (else stop with the error)


class UnknownTaskError(ValueError):
    """A mixture or task name that nothing registered: a configuration error, said before any work."""


def mixture_or_task(name: str):
    """SeqIO's task or mixture `name`; an unknown name (seqio says only "No Task or Mixture found") names the
    registered ones closest to it, or where registrations come from."""
    import seqio

    try:
        return seqio.get_mixture_or_task(name)
    except ValueError:
        raise UnknownTaskError(f"no SeqIO task or mixture is named {name!r}: {_closest_names(name)}") from None


def _closest_names(name: str) -> str:
    """The registered task and mixture names closest to `name`, or where registrations come from."""
    import difflib

    import seqio

    registered = sorted({*seqio.TaskRegistry.names(), *seqio.MixtureRegistry.names()})
    close = difflib.get_close_matches(str(name), registered, n=3, cutoff=0.6)
    return f"did you mean {' or '.join(repr(c) for c in close)}?" if close else (
        f"{len(registered)} are registered (ours: textchem_demo, textchem_standard, ...; `textchem-inspect --list` "
        "shows them all); your own need their module in MIXTURE_OR_TASK_MODULE")  # fmt: skip


def checked_provider(cfg: DatasetConfig, model, features: Sequence[str] = ("inputs",)):
    """`cfg`'s task or mixture, once what reading it for `model` needs is there: each task has the output
    `features` (training and evaluation read "inputs" and "targets", inference "inputs" only) written with the
    model's vocabulary (as T5X checks), and a SeqIO cache when `cfg.use_cached` (USE_CACHED_TASKS; seqio asserted
    it deep inside get_dataset)."""
    import seqio

    provider = mixture_or_task(cfg.mixture_or_task_name)
    tasks = seqio.get_subtasks(provider)
    check_vocabularies(tasks, model, features)
    check_split_slice(tasks, cfg.split, cfg.mixture_or_task_name)
    uncached = [task.name for task in tasks if cfg.use_cached and not task.cache_dir]
    if uncached:
        raise ValueError(f"USE_CACHED_TASKS: {', '.join(uncached)} {'has' if len(uncached) == 1 else 'have'} no SeqIO cache in "
                         f"{seqio.utils.get_global_cache_dirs() or 'any cache folder'}: make one with SeqIO's "
                         f"cache_tasks_main (pip install apache-beam; python -m seqio.scripts.cache_tasks_main "
                         f"--module_import=tasks --tasks={uncached[0]} --output_cache_dir=DIR) and give "
                         "--seqio_additional_cache_dirs=DIR, or read the tasks as they are: USE_CACHED_TASKS = False")  # fmt: skip
    return provider


def register_our_tasks() -> None:
    """Imports `tasks`, which registers ours; a user's own module of that name found first (a `tasks.py` in the
    folder of a `python -m` run) hid them, and every name then read as unknown: it is named instead."""
    import seqio

    module = importlib.import_module("tasks")
    if "textchem_demo" not in seqio.MixtureRegistry.names():
        raise UnknownTaskError(
            f"`import tasks` found {getattr(module, '__file__', module)}, not textchem_jax's tasks: a module of that "
            "name in the folder you run from (or on PYTHONPATH) hides ours. Rename yours (and give the new name as "
            "MIXTURE_OR_TASK_MODULE or --module_import), or run from another folder"
        )


def import_task_module(module: str | None, model=None) -> None:
    """Registers our tasks (`tasks`) and the user's own (`module`, T5X's MIXTURE_OR_TASK_MODULE); with a
    model adapter, our tasks use its vocabulary (gin VOCABULARY), checked against its embedding first, and so do
    the user's tasks that take `seqio_tasks.vocabulary()` when their module is imported (after it is set)."""
    from textchem_jax.data import seqio_tasks
    from textchem_jax.data import vocabulary as vocabularies

    register_our_tasks()
    vocab = getattr(model, "vocabulary", None)
    if vocab is not None:
        rows = model.t5_config.vocab_size
        if not vocabularies.fits_embedding(vocab, rows):
            raise ValueError(
                f"the vocabulary {vocabularies.vocabulary_file(vocab)} has {vocab.vocab_size:,} pieces "
                f"({vocabularies.fitting_rows(vocab)}) but the model's embedding has {rows:,} rows: bind vocab_size = "
                "@vocabularies.padded_vocab_size() with the same VOCABULARY (models/*.gin do), or use the checkpoint's "
                "own vocabulary (`vocabularies.checkpoint_vocabulary`, written into a textchem-convert model.gin)"
            )
        seqio_tasks.use_vocabulary(vocab)
    if module:
        if os.getcwd() not in sys.path and "" not in sys.path:  # found in the working directory, as by `python -m
            sys.path.append(os.getcwd())  # t5x.train`; our console scripts start without it (last: shadows nothing)
        import seqio

        registered = {*seqio.TaskRegistry.names(), *seqio.MixtureRegistry.names()}  # ours, and any earlier module's
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name is None or not (module == error.name or module.startswith(error.name + ".")):
                raise  # the module was found: something it imports is missing, its traceback says what
            raise UnknownTaskError(f"the tasks module {module!r} (MIXTURE_OR_TASK_MODULE) is not importable: {error}; "
                                   "put its folder on PYTHONPATH or run from it") from None
        except ValueError as error:  # seqio said only "Attempting to register duplicate provider: NAME"
            unregistered = re.fullmatch(r"Provider name not registered: (\S+)", str(error))
            if unregistered:  # seqio's whole message, naming neither the module nor the mixture
                name = unregistered.group(1)
                raise UnknownTaskError(f"the tasks module {module!r} (MIXTURE_OR_TASK_MODULE) refers to the task or "
                                       f"mixture {name!r}, which is not registered: register it before what refers to "
                                       f"it (a mixture of it), or correct the name ({_closest_names(name)})") from None  # fmt: skip
            duplicate = re.fullmatch(r"Attempting to register duplicate provider: (\S+)", str(error))
            if duplicate is None:
                raise
            name = duplicate.group(1)
            guard = ("register it only when it is not there yet (`if name not in seqio.TaskRegistry.names():`, "
                     "seqio.MixtureRegistry for a mixture)")  # fmt: skip
            if name not in registered:
                problem, fix = f"registers {name!r} twice", f"register it once, or {guard}"
            elif name.startswith("textchem_"):  # ours are all named so (tasks/__init__.py)
                problem, fix = f"registers {name!r}, a name of textchem_jax's own tasks and mixtures", "give yours another name"
            else:
                problem = f"registers {name!r}, which another module (or an earlier import of this one) registered"
                fix = f"give yours another name, or {guard}"
            raise ValueError(f"the tasks module {module!r} (MIXTURE_OR_TASK_MODULE) {problem}: {fix}") from None


def check_vocabularies(tasks, model, features: Sequence[str] = ()) -> None:
    """Every task has the output `features` the model reads (a task without "targets" trained into AutoGraph's
    "Dataset has incorrect type for feature 'targets'" stack), and writes its inputs and targets with the model's
    vocabulary (gin VOCABULARY), as T5X checks: a user's task with its own SentencePiece model trained, evaluated
    and exited 0 on ids the model reads otherwise."""
    from textchem_jax.data import seqio_tasks
    from textchem_jax.data import vocabulary as vocabularies

    vocab = getattr(model, "vocabulary", None) or seqio_tasks.vocabulary()  # unbound: what our tasks use
    for task in tasks:
        missing = [name for name in features if name not in task.output_features]
        if missing:
            raise ValueError(
                f"task {task.name} has the output features {', '.join(task.output_features) or 'none'}, the model reads "
                f"{' and '.join(features)}: add {' and '.join(repr(name) for name in missing)} to the task's "
                f"output_features, e.g. {missing[0]!r}: seqio.Feature(seqio_tasks.vocabulary(), add_eos=True)")  # fmt: skip
        for name in ("inputs", "targets"):
            feature = task.output_features.get(name)
            if feature is not None and feature.vocabulary != vocab:
                raise ValueError(
                    f"task {task.name} writes its {name} with the vocabulary "
                    f"{vocabularies.vocabulary_file(feature.vocabulary)}, the model reads "
                    f"{vocabularies.vocabulary_file(vocab)}: bind VOCABULARY to the task's (the model's embedding "
                    "follows it), or build the task's output features with seqio_tasks.vocabulary()")  # fmt: skip


def task_splits(task) -> tuple[str, ...] | None:
    """The task's splits, None where its source cannot tell without reading (a TFDS dataset not prepared)."""
    try:
        return tuple(task.splits)
    except Exception:  # seqio's TfdsDataSource loads the builder's info for them
        return None


def has_split(task, split: str) -> bool:
    """As SeqIO asks it (our tasks' splits also hold the slices their source reads, `validation[:4]`, `train[:25%]`:
    `datasets.split_slice`); a TFDS source reads any slice of a split it has, `validation[:1000]`; unknown: assumed.
    Only a TFDS source gets a slice for its split's name: SeqIO passes any other the slice as it is (a slice our
    source could not read passed here, then failed in SeqIO)."""
    import seqio

    try:
        splits = task.splits
        return split in splits or (isinstance(task.source, seqio.TfdsDataSource) and split.split("[", 1)[0] in splits)
    except Exception:
        return True


def training_eval_names(cfg: DatasetConfig) -> list[str]:
    """What T5X evaluates teacher-forced for `cfg`: each task of its mixture that has the split (SeqIO leaves out
    the others), then the mixture itself; a task alone."""
    import seqio

    provider = mixture_or_task(cfg.mixture_or_task_name)
    if not isinstance(provider, seqio.Mixture):
        return [cfg.mixture_or_task_name]
    return [task.name for task in seqio.get_subtasks(provider) if has_split(task, cfg.split)] + [cfg.mixture_or_task_name]


def check_split_slice(tasks, split: str, name: str) -> None:
    """A slice of a split the tasks have that they cannot read (`validation[:4x]`, `validation[:4]+test[:4]`) is one
    ValueError naming the forms they read; SeqIO said only that no task has that split."""
    from textchem_jax.data import datasets

    base = split.split("[", 1)[0]
    if base == split or any(has_split(task, split) for task in tasks):
        return
    if any(base in (task_splits(task) or ()) for task in tasks):
        try:
            datasets.split_slice(split)
        except ValueError as error:
            raise ValueError(f"{name} (run_config.DatasetConfig.split): {error}") from None


def check_splits(configs: Mapping[str, DatasetConfig | None]) -> list[str]:
    """The dataset configs of a run ({gin scope: config}; scope "" for textchem-eval's unscoped one) each read a split
    their tasks have: where no task has it
    (a task without a 'validation' split trained, then stopped at the first evaluation with KeyError: 'validation'),
    ValueError naming the tasks, their splits and the bindings that fix it. Returns the lines to say once at the
    start: the tasks of a mixture that lack the split, which SeqIO leaves out of it (with a log line at every read,
    which `get_dataset` keeps quiet)."""
    import seqio

    scopes: dict[tuple[str, str], list[str]] = {}
    for scope, cfg in configs.items():
        if cfg is not None and cfg.mixture_or_task_name is not None:
            scopes.setdefault((cfg.mixture_or_task_name, cfg.split), []).append(scope)
    lines = []
    for (name, split), readers in scopes.items():
        tasks = seqio.get_subtasks(mixture_or_task(name))
        check_split_slice(tasks, split, name)
        lacking = [task for task in tasks if not has_split(task, split)]
        if not lacking:
            continue
        listed = [f"{task.name}: {', '.join(task_splits(task) or ())}" for task in lacking]
        where = " and ".join(f"{scope}/" if scope else "the evaluation" for scope in readers)
        bindings = [f"{scope}/run_config.DatasetConfig.split" if scope else "run_config.DatasetConfig.split"
                    for scope in readers]  # fmt: skip
        reads = "reads" if len(readers) == 1 else "read"
        if len(lacking) < len(tasks):  # SeqIO leaves them out
            one = len(lacking) == 1
            splits = f"its splits: {', '.join(task_splits(lacking[0]) or ())}" if one else "; ".join(listed)
            lines.append(f"mixture {name}: task{'' if one else 's'} {', '.join(task.name for task in lacking)} "
                         f"ha{'s' if one else 've'} no {split!r} split ({splits}), so {where} {reads} the mixture's "
                         "other tasks only")  # fmt: skip
            continue
        other = next((s for task in lacking for s in task_splits(task) or () if s not in (split, "train")), None)
        other = other if other and readers[0] != "train" else "SPLIT"  # an evaluation's example, not training's
        if len(tasks) == 1 and tasks[0].name == name:
            what = f"task {name} has no {split!r} split (its splits: {', '.join(task_splits(tasks[0]) or ())})"
        else:
            what = f"no task of mixture {name} has a {split!r} split ({'; '.join(listed)})"
        raise ValueError(
            f"{what}, which {where} {reads}: add a {split!r} split to the task's source, or bind "
            f"{' and '.join(bindings)} to one it has (e.g. --gin.{bindings[0]}=\"'{other}'\")")  # fmt: skip
    return lines


_METRIC_PARAMETERS = {("targets", "predictions"), ("targets", "scores"), ("targets", "predictions", "aux_values")}


def check_metric_fns(tasks) -> None:
    """Each task's metric functions take what SeqIO calls them with: a wrong signature was seqio's ValueError at the
    first evaluation, naming neither the task nor the function."""
    import inspect

    for task in tasks:
        try:
            _ = task.metric_fns  # seqio sorts them by their parameters, and raises for one it cannot call
        except ValueError as error:
            functions = getattr(task, "_metric_fn_constructor_args", None) or ()  # seqio's own list (none: not said)
            for index, fn in enumerate(functions):
                try:
                    parameters = inspect.signature(fn).parameters.values()
                except (TypeError, ValueError):
                    continue
                required = tuple(p.name for p in parameters
                                 if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD)  # fmt: skip
                if required not in _METRIC_PARAMETERS:
                    target = getattr(fn, "func", fn)  # a functools.partial: the function it calls
                    named = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"
                    raise ValueError(f"task {task.name}: metric_fns[{index}] {named} takes ({', '.join(required)}); SeqIO "
                                     "calls it as metric_fn(targets, predictions) (or targets, scores / targets, "
                                     "predictions, aux_values): rename or add its parameters") from None  # fmt: skip
            raise ValueError(f"task {task.name}: {error}") from None


@contextlib.contextmanager
def _skipped_tasks_said(split: str):
    """SeqIO's "Task NAME has no 'validation' split, skipping." kept out of the log while a mixture is read: it came
    at every evaluation of the run, and `check_splits` says it once, at the start."""
    line = re.compile(rf"Task \S+ has no '{re.escape(split)}' split, skipping\.")

    def unsaid(record: logging.LogRecord) -> bool:
        return not line.fullmatch(str(record.getMessage()))

    absl = logging.getLogger("absl")
    absl.addFilter(unsaid)
    try:
        yield
    finally:
        absl.removeFilter(unsaid)


def get_dataset(cfg: DatasetConfig, model, *, seed: int = 0, num_epochs: int | None = None, mesh=None):
    """This host's shard of `cfg`, converted by `model`'s feature converter, in per-host batches.

    With `mesh` the shard is the host's position along its `data` axis (`partitioning.host_data_shard`:
    hosts sharing data rows read the same examples); without one, the process index.
    """
    import jax
    import seqio
    import tensorflow as tf

    from textchem_jax import partitioning
    from textchem_jax.models import feature_converters

    if cfg.mixture_or_task_name is None:
        raise ValueError("the dataset config names no mixture or task: bind MIXTURE_OR_TASK_NAME")
    import_task_module(cfg.module, model)
    index, count = partitioning.host_data_shard(mesh) if mesh is not None else (jax.process_index(), jax.process_count())
    if cfg.batch_size % count:
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by the {count} host shards of the data")
    provider = checked_provider(cfg, model)
    lengths = dict(cfg.task_feature_lengths)
    options = {}
    # Task features the model reads beside inputs and targets (e2-CLM: `input_domain`): a task keeps the
    # fields its preprocessors add, a mixture only its output features unless told to pass them through.
    extra = [name for name in model.input_features if name != "encoder_input_tokens"]
    if extra and isinstance(provider, seqio.Mixture):
        options["passthrough_features"] = extra
    with _skipped_tasks_said(cfg.split):
        ds = provider.get_dataset(
            lengths,
            split=cfg.split,
            use_cached=cfg.use_cached,
            shuffle=cfg.shuffle,
            seed=seed if cfg.seed is None else cfg.seed,
            shard_info=seqio.ShardInfo(index, count),
            num_epochs=num_epochs,
            **options,
        )
    converter = model.feature_converter(cfg.pack)
    try:
        if cfg.pack:  # SeqIO packs on one core: spread it over all of them
            ds = feature_converters.convert_in_parallel(converter, ds, lengths)
        else:
            ds = converter(ds, task_feature_lengths=lengths)
    except ValueError as error:
        missing = [name for name in extra if repr(name) in str(error)]
        if not missing:
            raise
        raise ValueError(
            f"{cfg.mixture_or_task_name} gives no {missing[0]!r}, which this model reads (a routed e2-CLM "
            "variant): add it in the task's preprocessors (textchem_jax.data.preprocessors.add_input_domain), "
            "or use an aggregation that needs none (e2clm_config.aggregation = 'mean')"
        ) from None
    # Prefetched: the train loop takes batches straight from here, so the next one is packed during the step.
    return ds.batch(cfg.batch_size // count, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
