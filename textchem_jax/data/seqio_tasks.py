"""Building SeqIO tasks and mixtures for the five Text+Chem T5 tasks (registered by `tasks/`)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
from collections.abc import Callable, Iterator

from textchem_jax.catalogue import DOMAINS, PROMPTS, SPLITS, TASKS, task_input_domain
from textchem_jax.chem import notations
from textchem_jax.data import datasets, demo, sources
from textchem_jax.data import vocabulary as vocabularies

logger = logging.getLogger("textchem_jax.data")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What a registered SeqIO task reads: which of the five tasks, from which folder."""

    task: str
    directory: Callable[[], str] | str | os.PathLike  # a function: read at each use (TEXTCHEM_DATA_DIR may change)
    reactions: str | None = None
    augment: int = 0
    tfds_dir: str | None = None
    canonical: bool = False
    prompt: str | None = None  # None: the Text+Chem T5 prompt of `task`; "" for prompt-free models (MolT5)
    gt4sd_unknown: bool = False  # read a decoded unknown piece as `\` in SMILES outputs, as GT4SD does
    notation: str | None = None  # the chemistry inputs rewritten in this notation (robustness evaluation)
    source: str = "files"  # the datasets' own files; "gt4sd": GT4SD's Text+Chem T5 jsonl (`gt4sd/{split}.jsonl`)

    def folder(self) -> str:
        """The data folder: `directory` itself, or what the function returns now."""
        return str(self.directory() if callable(self.directory) else self.directory)

    def pairs(self, split: str, report=None, seed: int = 0) -> list[tuple[str, str]]:
        """The task's (input, target) pairs: from the files in `folder()`, or from TFDS with `tfds_dir`."""
        records = None
        if self.tfds_dir:
            from textchem_jax.data import tfds_builders  # imports tensorflow_datasets: only for TFDS tasks

            records = tfds_builders.tfds_records(self.tfds_dir)
        return datasets.task_pairs(
            self.task,
            split,
            None if self.tfds_dir else self.folder(),
            source=self.source,
            reactions=self.reactions,
            records=records,
            canonical=self.canonical,
            augment=self.augment,
            notation=self.notation,
            seed=seed,
            report=report,
        )

    def splits(self) -> tuple[str, ...]:
        """'train' and the other SPLITS whose files are in the folder: a SeqIO mixture leaves out a task that lacks
        the split asked for, so a user's task with only `uspto50k/train.csv`, listing every split, turned off the
        evaluation of its whole mixture (`uspto50k split 'validation' not found`). 'train' is always listed: a
        mixture that silently trained on one task of five because the others' train files were missing would be
        another experiment; reading them says what is missing and where. All SPLITS where the folder has none of
        the files (not set, or mistyped) or the examples come from TFDS."""
        if self.tfds_dir:
            return SPLITS
        try:
            folder = self.folder()
        except FileNotFoundError:  # no data folder set
            return SPLITS
        has_files = functools.partial(_split_files_present, self.task, self.source, self.reactions, folder)
        present = [split for split in SPLITS if split != "train" and has_files(split)]
        return ("train", *present) if present or has_files("train") else SPLITS


@functools.lru_cache(maxsize=None)
def _split_files_present(task: str, source: str, reactions: str | None, folder: str, split: str) -> bool:
    """Whether the files `TaskSpec.pairs(split)` reads are in `folder` (`datasets.dataset_files`), reading none of
    them; once per process: SeqIO asks a task's splits at each mixture lookup and evaluation (14 `exists` calls a
    round for textchem_standard, each a request on gs://)."""

    def files_only(dataset: str, split: str) -> list:  # the records reader of `task_pairs`, without records
        datasets.dataset_files(dataset, split, folder)
        return []

    try:
        if source == "files":
            datasets.task_pairs(task, split, folder, reactions=reactions, records=files_only)
        else:
            datasets.dataset_files(source, split, folder)
    except FileNotFoundError:
        return False
    return True


SPECS: dict[str, TaskSpec] = {}


def demo_directory() -> str:
    """The folder of the `textchem_demo_*` tasks: the demo corpus, generated once into the cache."""
    return str(demo.demo_data_dir())


_vocabulary = None  # the vocabulary our tasks are registered with (see use_vocabulary)
MIXTURE_SPECS: dict[str, list] = {}


def vocabulary():
    """The vocabulary of our tasks: the model's VOCABULARY once `use_vocabulary` set it, else
    `TEXTCHEM_VOCABULARY` or the shipped default (`vocabulary.task_vocabulary`)."""
    global _vocabulary
    if _vocabulary is None:
        _vocabulary = vocabularies.task_vocabulary()
    return _vocabulary


def use_vocabulary(vocab=None):
    """Makes `vocab` (gin's VOCABULARY, what the model reads) the vocabulary of every task and mixture we
    registered, registering them again when it changes, and returns it: one binding drives tasks and
    model alike. Real T5X binds `VOCABULARY = @seqio_tasks.use_vocabulary()` (gin_configs/t5x) so its
    "Model and Task vocabularies do not match" check sees one vocabulary; None keeps the current one. A plain
    `seqio.SentencePieceVocabulary` (T5X's own gin binds one) is used as ours: it tokenizes as sentencepiece does."""
    global _vocabulary
    import seqio

    from textchem_jax.data.spm_vocabulary import SentencePieceVocabulary

    if vocab is not None and type(vocab) is seqio.SentencePieceVocabulary:  # equal to ours: seqio compares files
        vocab = SentencePieceVocabulary.like(vocab)
    if vocab is None or vocab == vocabulary():
        return vocabulary()

    _vocabulary = vocab
    logger.info("tasks now use the vocabulary %s", vocabularies.vocabulary_file(vocab))
    for name in MIXTURE_SPECS:
        seqio.MixtureRegistry.remove(name)
    for name, spec in list(SPECS.items()):
        seqio.TaskRegistry.remove(name)
        _register(name, spec)
    for name, tasks_and_rates in MIXTURE_SPECS.items():
        seqio.MixtureRegistry.add(name, tasks_and_rates)
    return vocab


def register_mixture(name: str, tasks_and_rates: list) -> None:
    """`seqio.MixtureRegistry.add`, remembered so that `use_vocabulary` can register it again. A rate that is
    negative or not a finite number, or rates that are all 0, are refused here: SeqIO took them, then
    textchem-inspect divided by zero and training read a rate of -1 as 0 (that task never seen)."""
    import seqio

    numbered = []  # the rates given as numbers (a function of the task is known when called)
    for entry in tasks_and_rates:
        if isinstance(entry, (tuple, list)) and len(entry) == 2 and not callable(entry[1]):
            task, rate = getattr(entry[0], "name", entry[0]), entry[1]
            try:
                numbered.append(float(rate))
            except (TypeError, ValueError):
                numbered.append(math.nan)
            if not (math.isfinite(numbered[-1]) and numbered[-1] >= 0):
                raise ValueError(f"register_mixture({name!r}): task {task} has the rate {rate!r}; give each "
                                 "task a finite rate >= 0 (a number, or a function of the task: rate_by_examples())")
    if len(numbered) == len(tasks_and_rates) and not any(numbered):
        raise ValueError(f"register_mixture({name!r}): every task's rate is 0, so training would sample nothing; "
                         "give at least one task a rate > 0")  # fmt: skip
    seqio.MixtureRegistry.add(name, tasks_and_rates)
    # Once SeqIO took it (a refused duplicate replaced the first here), by task name: `use_vocabulary` registers the
    # tasks again, and a Task object kept here would be the one of the old vocabulary.
    MIXTURE_SPECS[name] = [(getattr(entry[0], "name", entry[0]), entry[1]) if isinstance(entry, (tuple, list))
                           else getattr(entry, "name", entry) for entry in tasks_and_rates]  # fmt: skip


# Metrics a task always reports, even where they cannot be computed here (then NaN, printed "n/a").
_ALWAYS = {
    "retro": {
        "roundtrip_accuracy": "needs a forward predictor: textchem-eval and training's evaluation use the model "
        "itself; elsewhere wrap the evaluation in metrics.metric_settings(forward_fn=...)"
    }
}


def _every_key(metric_fn, task: str):
    """The task's metric function, given what `metrics.settings.current()` holds (the retrosynthesis
    round trip's forward model, the caption tokenizer), with every metric key always present: one that
    could not be computed (None, e.g. METEOR without WordNet) becomes NaN, which SeqIO's loggers accept
    and our tables print as n/a, with the reason logged."""
    from textchem_jax.metrics import settings

    @functools.wraps(metric_fn)
    def wrapped(targets, predictions):
        current = settings.current()
        options = {}
        if task == "retro" and current.forward_fn is not None:
            options["forward_fn"] = current.forward_fn
        if task == "mol2text" and current.caption_tokenizer is not None:
            options["tokenizer"] = current.caption_tokenizer
        results = dict(metric_fn(targets, predictions, **options))
        for key, reason in _ALWAYS.get(task, {}).items():
            if results.get(key) is None:
                results[key] = None
                logger.warning("%s: %s is n/a: %s", task, key, reason)
        for key, value in results.items():
            if value is None:
                if key not in _ALWAYS.get(task, {}):
                    logger.warning("%s: %s could not be computed (see the warning above): reported as n/a", task, key)
                results[key] = float("nan")
        return results

    return wrapped


def metric_and_postprocess(task: str, gt4sd_unknown: bool = False):
    """(metric function, postprocessor) of one of the five tasks (GT4SD-compatible SMILES outputs optionally);
    the metric function reports every key (`_every_key`)."""
    from textchem_jax import metrics

    metric_fn, postprocess_fn = {
        "forward": (metrics.forward_metrics, metrics.smiles_postprocessor),
        "retro": (metrics.retro_metrics, metrics.retro_postprocessor),
        "paragraph2actions": (metrics.paragraph2actions_metrics, metrics.text_postprocessor),
        "text2mol": (metrics.text2mol_metrics, metrics.smiles_postprocessor),
        "mol2text": (metrics.mol2text_metrics, metrics.text_postprocessor),
    }[task]
    if gt4sd_unknown and DOMAINS[task][1] == "chemistry":
        postprocess_fn = metrics.gt4sd_compatible(postprocess_fn)
    return _every_key(metric_fn, task), postprocess_fn


_reported_skips: set[str] = set()  # the skip reports already logged by this process
_skips_listed_by_caller = False  # `skips_listed_by_caller`


@contextlib.contextmanager
def skips_listed_by_caller() -> Iterator[None]:
    """Holds back `_report_skips`' warning while a caller that lists every skipped row itself (textchem-inspect)
    reads the tasks: each row was said twice, the first time cut at 3 lines, before the report's header."""
    global _skips_listed_by_caller
    _skips_listed_by_caller = True
    try:
        yield
    finally:
        _skips_listed_by_caller = False


def _report_skips(name: str, spec: TaskSpec, split: str, report: sources.SkipReport) -> None:
    """Logs the rows a split of the task `name` skipped or kept with a fault, once per process for the same files and
    faults (SeqIO builds a split's dataset at every evaluation): the examples a metric divides by are the ones read.
    The faults are the whole file's (which example a line became is not kept), so a slice's line says so, with the
    rows it evaluates: USPTO-MIT's `test[:6]` listed lines 689, 1552, ... as if among its 6 rows."""
    text = report.format(max_lines=3, issues_only=True)
    if not text or text in _reported_skips or _skips_listed_by_caller:
        return
    _reported_skips.add(text)
    selection = datasets.split_slice(split)
    evaluated, where = "", ""
    if selection.name != split:
        rows = _split_rows(spec, selection.name)
        evaluated = f" ({len(range(rows)[selection.rows(rows)])} of the split's {rows} rows)"
        where = " in the whole file, not only in the slice"
    logger.warning("task %s, split %s%s: rows skipped or kept with a fault%s (textchem-inspect lists them all):\n%s",
                   name, split, evaluated, where, text)  # fmt: skip


def _split_rows(spec: TaskSpec, split: str) -> int:
    """The rows of a whole split (no slice) a slice's messages count against: one example per row read, neither
    augmented nor rewritten (canonicalizing would change no count, only cost RDKit's time)."""
    return len(dataclasses.replace(spec, augment=0, notation=None, canonical=False).pairs(split))


def _no_examples(name: str, spec: TaskSpec, split: str, report: sources.SkipReport) -> ValueError:
    """Why the task `name` has no example in `split`. A slice that keeps none of a split's rows is said as such:
    `validation[100:]` of 40 rows listed the 40 rows read and none skipped, as if the data were at fault."""
    selection = datasets.split_slice(split)
    if selection.name != split:
        rows = _split_rows(spec, selection.name)
        if rows:
            return ValueError(f"{name}: the slice {split[len(selection.name):]} of {selection.name}'s {rows} rows "
                              f"keeps none; give bounds within them")  # fmt: skip
    where = f"the TFDS datasets of {spec.tfds_dir}" if spec.tfds_dir else spec.folder()
    return ValueError(f"task {name}: split {split!r} in {where} has no valid examples\n{report.format(max_lines=3)}")


def _dataset_fn(name: str, spec: TaskSpec):
    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
        import tensorflow as tf

        report = sources.SkipReport()
        pairs = spec.pairs(split, report=report, seed=seed or 0)
        if not pairs:
            raise _no_examples(name, spec, split, report)
        _report_skips(name, spec, split, report)
        inputs, targets = zip(*pairs)
        dataset = tf.data.Dataset.from_tensor_slices({"input": list(inputs), "target": list(targets)})
        if shuffle_files:  # the examples are in memory: a full, seeded shuffle costs nothing
            dataset = dataset.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)
        return dataset

    return dataset_fn


_REACTIONS = ("uspto_mit", "uspto50k")  # the datasets of reactions a forward or retro task may read
_SOURCES = ("files", "gt4sd")


def register_task(name: str, task: str, directory: Callable[[], str] | str | os.PathLike, **options):
    """Registers `name` as a SeqIO task reading `task` examples (one of TASKS) from the folder `directory`: a path
    (local or `gs://`), or a function returning one when the task is read (ours: `datasets.data_dir`).

    `options` are `TaskSpec` fields: with `tfds_dir` the examples come from datasets our TFDS builders
    prepared there; `canonical` and `augment` are passed to `datasets.task_pairs`; `prompt` replaces the
    Text+Chem T5 prompt; `gt4sd_unknown` scores released GT4SD checkpoints as their authors did; `source="gt4sd"`
    reads the task's rows (by their prompt) from GT4SD's own training files, `gt4sd/{train,valid,test}.jsonl`.
    A wrong task, folder, `reactions` or `source` is refused here: a folder given as a string was `'str' object is not
    callable`, and a task `retrosynthesis` a `KeyError`, each at the first read, 50 lines into a traceback.
    """
    spec = TaskSpec(task, directory, **options)
    problem = None
    if task not in TASKS:
        problem = f"unknown task {task!r}; use one of {', '.join(TASKS)}"
    elif not (callable(directory) or isinstance(directory, (str, os.PathLike))):
        problem = (f"the directory must be a folder (a str or a path) or a function returning one, got {directory!r} "
                   f"({type(directory).__name__})")  # fmt: skip
    elif spec.reactions not in (None, *_REACTIONS):
        problem = f"unknown reactions {spec.reactions!r}; use one of {', '.join(_REACTIONS)}"
    elif spec.source not in _SOURCES:
        problem = f"unknown source {spec.source!r}; use one of {', '.join(_SOURCES)}"
    if problem:
        raise ValueError(f"register_task({name!r}): {problem}")
    return _register(name, spec)


class FractionSplits(tuple):
    """SPLITS that also contain the slices of them `datasets.split_slice` reads (`train[:25%]`, `validation[:100]`):
    a SeqIO mixture reads only the tasks whose source lists the split asked for, so a data-fraction run of any
    mixture was "No datasets have a 'train[:25%]' split"."""

    def __contains__(self, split: object) -> bool:
        try:
            base = datasets.split_slice(str(split)).name
        except ValueError:  # not a slice we read
            return False
        return super().__contains__(base)


@functools.cache
def _source_class():
    """seqio.FunctionDataSource whose splits are those `present_splits()` finds as they are asked for, as
    FractionSplits (seqio's own __init__ makes them a fixed tuple)."""
    import seqio

    class FractionSource(seqio.FunctionDataSource):
        def __init__(self, dataset_fn, present_splits: Callable[[], tuple[str, ...]]):
            super().__init__(dataset_fn, splits=SPLITS)
            self._present_splits = present_splits

        @property
        def splits(self) -> FractionSplits:
            return FractionSplits(self._present_splits())

    return FractionSource


def _register(name: str, spec: TaskSpec):
    import seqio

    from textchem_jax.data.preprocessors import add_input_domain, add_prompt, tokenize

    vocab = vocabulary()
    metric_fn, postprocess_fn = metric_and_postprocess(spec.task, spec.gt4sd_unknown)
    prompt = PROMPTS[spec.task] if spec.prompt is None else spec.prompt
    registered = seqio.TaskRegistry.add(
        name,
        source=_source_class()(_dataset_fn(name, spec), spec.splits),
        preprocessors=[
            functools.partial(add_prompt, prompt=prompt, keep_input_as="product" if spec.task == "retro" else None),
            tokenize,  # SeqIO's, in batches: our vocabulary tokenizes in Python
            # SeqIO's cache point, after the deterministic steps (as T5's tasks): `seqio_cache_tasks` can
            # preprocess these tasks offline and USE_CACHED_TASKS read them. Randomized-SMILES augmentation
            # happens in the source, so an augmented task is not cacheable (it would freeze one draw).
            *([] if spec.augment else [seqio.CacheDatasetPlaceholder()]),
            seqio.preprocessors.append_eos_after_trim,
            functools.partial(add_input_domain, domain=task_input_domain(spec.task)),
        ],
        output_features={
            "inputs": seqio.Feature(vocab, add_eos=True),
            "targets": seqio.Feature(vocab, add_eos=True),
        },
        postprocess_fn=postprocess_fn,
        metric_fns=[metric_fn],
    )
    SPECS[name] = spec  # once SeqIO took it: a refused duplicate of `textchem_retro` replaced ours here
    return registered


NOTATION_INFIX = "_notation_"  # a notation variant's task name: <task><NOTATION_INFIX><variant>


def notation_variants(task_name: str, variants: list[str]) -> list[str]:
    """Registers `task_name` once per notation variant (`notations.variant_names`: the same examples, their
    SMILES inputs rewritten) as `<task_name>_notation_<variant>`, and returns those names. Tasks without a
    chemistry input have none."""
    import seqio

    for variant in variants:
        notations.check_variant(variant)
    spec = SPECS[task_name]
    if DOMAINS[spec.task][0] != "chemistry":
        return []
    names = []
    for variant in variants:
        name = f"{task_name}{NOTATION_INFIX}{variant}"
        if name not in seqio.TaskRegistry.names():
            _register(name, dataclasses.replace(spec, notation=variant, augment=0))
        names.append(name)
    return names


@functools.cache
def count_examples(task_name: str, split: str = "train") -> int:
    """Examples in a task split, read through the task's own source (cached)."""
    import seqio

    task = seqio.get_mixture_or_task(task_name)
    return sum(1 for _ in task.source.get_dataset(split, shuffle=False).as_numpy_iterator())


def rate_by_examples(temperature: float = 1.0, split: str = "train", like: str | None = None) -> Callable:
    """A mixing rate proportional to `examples ** (1 / temperature)` (T5's temperature sampling).

    Where the split is missing (the public ChEBI-20 and USPTO files have no train split) the
    validation split is counted instead, with a log line saying so. `like` counts that task's examples
    instead (an augmented task mixed as its unaugmented original is).
    """

    def rate(task) -> float:
        name = like or task.name
        try:
            n = count_examples(name, split)
        except FileNotFoundError:
            logger.info("mixing rate of %s: no %s split, counting validation examples", name, split)
            n = count_examples(name, "validation")
        return float(n) ** (1.0 / temperature)

    return rate


def augm_rate(prefix: str = "textchem_", cross_domain_examples: int | None = None, split: str = "train") -> Callable:
    """`textchem_augm` as the paper built it: the cross-domain tasks (text2mol, mol2text) are replicated to
    `cross_domain_examples` each (the authors: ChEBI-20 replicated to 2.3M samples for each; default here:
    the size of the largest mono-domain task), the others keep their own example counts.

    `prefix` names the tasks (`textchem_` or `textchem_demo_`); register a mixture with another
    `cross_domain_examples` through `register_mixture` for a different balance.
    """
    import seqio

    by_examples = rate_by_examples(split=split)
    mono = [task for task in TASKS if DOMAINS[task][0] == DOMAINS[task][1]]

    def rate(task) -> float:
        name = task.name.removeprefix(prefix)
        if DOMAINS[name][0] == DOMAINS[name][1]:
            return by_examples(task)
        if cross_domain_examples is not None:
            return float(cross_domain_examples)
        return max(by_examples(seqio.get_mixture_or_task(prefix + other)) for other in mono)

    return rate

