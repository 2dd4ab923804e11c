"""Building SeqIO tasks and mixtures for the five Text+Chem T5 tasks (registered by `tasks/`)."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable

from textchem_jax.catalogue import DOMAINS, PROMPTS, SPLITS, TASKS, task_input_domain
from textchem_jax.chem import notations
from textchem_jax.data import datasets, demo, sources
from textchem_jax.data import vocabulary as vocabularies

logger = logging.getLogger("textchem_jax.data")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What a registered SeqIO task reads: which of the five tasks, from which folder."""

    task: str
    directory: Callable[[], str]
    reactions: str | None = None
    augment: int = 0
    tfds_dir: str | None = None
    canonical: bool = False
    prompt: str | None = None  # None: the Text+Chem T5 prompt of `task`; "" for prompt-free models (MolT5)
    gt4sd_unknown: bool = False  # read a decoded unknown piece as `\` in SMILES outputs, as GT4SD does
    notation: str | None = None  # the chemistry inputs rewritten in this notation (robustness evaluation)
    source: str = "files"  # the datasets' own files; "gt4sd": GT4SD's Text+Chem T5 jsonl (`gt4sd/{split}.jsonl`)

    def pairs(self, split: str, report=None, seed: int = 0) -> list[tuple[str, str]]:
        """The task's (input, target) pairs: from the files in `directory()`, or from TFDS with `tfds_dir`."""
        records = None
        if self.tfds_dir:
            from textchem_jax.data import tfds_builders  # imports tensorflow_datasets: only for TFDS tasks

            records = tfds_builders.tfds_records(self.tfds_dir)
        return datasets.task_pairs(
            self.task,
            split,
            None if self.tfds_dir else self.directory(),
            source=self.source,
            reactions=self.reactions,
            records=records,
            canonical=self.canonical,
            augment=self.augment,
            notation=self.notation,
            seed=seed,
            report=report,
        )


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
    "Model and Task vocabularies do not match" check sees one vocabulary; None keeps the current one."""
    global _vocabulary
    if vocab is None or vocab == vocabulary():
        return vocabulary()
    import seqio

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
    """`seqio.MixtureRegistry.add`, remembered so that `use_vocabulary` can register it again."""
    import seqio

    MIXTURE_SPECS[name] = list(tasks_and_rates)
    seqio.MixtureRegistry.add(name, tasks_and_rates)


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


def _report_skips(task: str, split: str, report: sources.SkipReport) -> None:
    """Logs the rows a split skipped or kept with a fault, once per process for the same files and faults
    (SeqIO builds a split's dataset at every evaluation): the examples a metric divides by are the ones read."""
    text = report.format(max_lines=3, issues_only=True)
    if text and text not in _reported_skips:
        _reported_skips.add(text)
        logger.warning("task %s, split %s: rows skipped or kept with a fault (textchem-inspect lists them all):\n%s",
                       task, split, text)  # fmt: skip


def _dataset_fn(spec: TaskSpec):
    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
        import tensorflow as tf

        report = sources.SkipReport()
        pairs = spec.pairs(split, report=report, seed=seed or 0)
        if not pairs:
            raise ValueError(f"task {spec.task}: split {split!r} in {spec.directory()} has no valid examples\n{report.format(max_lines=3)}")
        _report_skips(spec.task, split, report)
        inputs, targets = zip(*pairs)
        dataset = tf.data.Dataset.from_tensor_slices({"input": list(inputs), "target": list(targets)})
        if shuffle_files:  # the examples are in memory: a full, seeded shuffle costs nothing
            dataset = dataset.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)
        return dataset

    return dataset_fn


def register_task(name: str, task: str, directory: Callable[[], str], **options):
    """Registers `name` as a SeqIO task reading `task` examples from the folder `directory()`.

    `options` are `TaskSpec` fields: with `tfds_dir` the examples come from datasets our TFDS builders
    prepared there; `canonical` and `augment` are passed to `datasets.task_pairs`; `prompt` replaces the
    Text+Chem T5 prompt; `gt4sd_unknown` scores released GT4SD checkpoints as their authors did; `source="gt4sd"`
    reads the task's rows (by their prompt) from GT4SD's own training files, `gt4sd/{train,valid,test}.jsonl`.
    """
    return _register(name, TaskSpec(task, directory, **options))


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
    """seqio.FunctionDataSource whose splits are FractionSplits (seqio's own __init__ makes them a tuple)."""
    import seqio

    class FractionSource(seqio.FunctionDataSource):
        @property
        def splits(self) -> FractionSplits:
            return FractionSplits(super().splits)

    return FractionSource


def _register(name: str, spec: TaskSpec):
    import seqio

    from textchem_jax.data.preprocessors import add_input_domain, add_prompt

    vocab = vocabulary()
    metric_fn, postprocess_fn = metric_and_postprocess(spec.task, spec.gt4sd_unknown)
    SPECS[name] = spec
    prompt = PROMPTS[spec.task] if spec.prompt is None else spec.prompt
    return seqio.TaskRegistry.add(
        name,
        source=_source_class()(_dataset_fn(spec), splits=SPLITS),
        preprocessors=[
            functools.partial(add_prompt, prompt=prompt, keep_input_as="product" if spec.task == "retro" else None),
            seqio.preprocessors.tokenize,
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

