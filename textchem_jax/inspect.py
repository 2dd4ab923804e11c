"""`textchem-inspect`: what a task or mixture feeds the model, before spending accelerator time on it.

Prints, non-interactively: examples (raw and tokenized), effective mixture rates, token-length
percentiles per task and feature, the fraction truncated at `--task_feature_lengths`, the `<unk>`
rate, and the report of skipped rows.

  textchem-inspect --mixture=textchem_demo
  textchem-inspect --list --module_import=my_tasks   # what is registered, your own tasks included
  TEXTCHEM_DATA_DIR=../shared/data textchem-inspect --mixture=textchem_standard --split=validation
"""

from __future__ import annotations

import argparse
import ast
import sys

import numpy as np

from textchem_jax.cli import at_least, command, parse_args, quiet_libraries
from textchem_jax.run_config import import_task_module

PERCENTILES = (50, 90, 95, 99, 100)


DEFAULT_LENGTHS = {"inputs": 512, "targets": 512}  # T5X's TASK_FEATURE_LENGTHS in its example gin files


def feature_lengths(text: str) -> dict[str, int]:
    """`inputs=512,targets=512`, or gin's TASK_FEATURE_LENGTHS as copied from a gin file (`{'inputs': 512,
    'targets': 512}`) -> {"inputs": 512, "targets": 512} (an argparse type). A feature not given keeps its
    DEFAULT_LENGTHS one: `targets=128` alone is what a decoder-only task's gin gives (`inputs=10` alone was a
    KeyError: 'targets')."""
    expected = f"expected inputs=N,targets=M or {{'inputs': N, 'targets': M}}, got {text!r}"
    if text.strip().startswith("{"):
        try:
            items = [(str(key), str(value)) for key, value in ast.literal_eval(text.strip()).items()]
        except (ValueError, SyntaxError, AttributeError):
            raise argparse.ArgumentTypeError(expected) from None
    else:
        items = [item.partition("=")[::2] for item in text.split(",")]
    lengths = dict(DEFAULT_LENGTHS)
    for key, value in items:
        if key.strip() not in DEFAULT_LENGTHS or not value.strip().isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(expected)
        lengths[key.strip()] = int(value)
    return lengths


def split_expression(text: str) -> str:
    """A split, or a slice of one as training and evaluation read it (`train[:50%]`, `validation[:100]`:
    `datasets.split_slice`), an argparse type: `--split` took only the three names."""
    from textchem_jax.data import datasets

    try:
        datasets.split_slice(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _percentile(lengths: np.ndarray, p: int) -> int:
    """Rounded up: the length that holds p% of the examples (int() showed p99 238.67 as 238)."""
    return int(np.ceil(np.percentile(lengths, p))) if lengths.size else 0


def _vocabulary_lines(task, width: int, given) -> tuple[list[str], str | None]:
    """The vocabulary file each feature of `task` tokenizes with, and a warning when it is not --vocabulary's
    (`given`): a user's task with its own vocabulary ignored --vocabulary without a word."""
    from textchem_jax.data import vocabulary as vocabularies

    by_file: dict[str, list[str]] = {}
    for feature, spec in task.output_features.items():
        by_file.setdefault(vocabularies.vocabulary_file(spec.vocabulary), []).append(feature)
    lines = [f"  {task.name:<{width}}{file} ({', '.join(features)})" for file, features in by_file.items()]
    own = [spec.vocabulary for spec in task.output_features.values() if spec.vocabulary != given]
    warning = None
    if given is not None and own:
        warning = (f"warning: --vocabulary does not apply to task {task.name}: it tokenizes with its own "
                   f"{vocabularies.vocabulary_file(own[0])} (registered so), which its figures below are for")  # fmt: skip
    return lines, warning


def inspect(name: str, split: str, lengths: dict[str, int], num_examples: int, max_examples: int,
            vocabulary=None) -> str:  # fmt: skip
    """The whole report for one task or mixture, as text; `vocabulary`: --vocabulary's, to name the tasks that
    tokenize with another."""
    import seqio

    from textchem_jax.data import seqio_tasks
    from textchem_jax.data.sources import SkipReport
    from textchem_jax.run_config import has_split, task_splits, mixture_or_task, register_our_tasks

    register_our_tasks()

    provider = mixture_or_task(name)
    members = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
    width = max(len("task"), *(len(task.name) for task in members)) + 2  # a fixed 34 broke on longer names
    out = [f"== {name} ({split}) =="]
    if isinstance(provider, seqio.Mixture):
        rates = {t.name: provider.get_rate(t) for t in members}
        total = sum(rates.values())
        if not total > 0 or any(not rate >= 0 for rate in rates.values()):  # registered through seqio: ours refuses
            raise ValueError(f"mixture {name}: the rates {rates} must each be >= 0, one > 0")  # was ZeroDivisionError
        out.append("effective mixture rates:")
        out += [f"  {task:<{width}}{rate / total:8.4f}" for task, rate in rates.items()]
    lacking = [task for task in members if not has_split(task, split)]  # SeqIO leaves them out of the mixture
    if len(lacking) == len(members):
        if members == [provider]:
            what = f"task {name} has no split {split!r} (its splits: {', '.join(task_splits(provider) or ())})"
        else:
            splits = "; ".join(f"{task.name}: {', '.join(task_splits(task) or ())}" for task in lacking)
            what = f"no task of {name} has a split {split!r} ({splits})"
        raise ValueError(f"{what}; give --split one of them")
    out += [f"task {task.name} has no {split!r} split (its splits: {', '.join(task_splits(task) or ())}): left out, as "
            "SeqIO leaves it out of the mixture" for task in lacking]  # fmt: skip
    members = [task for task in members if task not in lacking]
    vocabulary_lines = ["vocabularies (file, features):"]
    for task in members:
        lines, warning = _vocabulary_lines(task, width, vocabulary)
        vocabulary_lines += lines
        out += [warning] if warning else []
    report = SkipReport()
    rows_of_stats, examples = [], []
    for task in members:
        if task.name in seqio_tasks.SPECS:  # ours: read from the data files, with their skipped rows counted
            seqio_tasks.SPECS[task.name].pairs(split, report=report)
        with seqio_tasks.skips_listed_by_caller():  # listed in full below
            ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, use_cached=False)
            rows = list(ds.take(max_examples).as_numpy_iterator())
        features = [feature for feature in task.output_features if not rows or feature in rows[0]]  # a decoder-only
        examples += [(task, features, row) for row in rows[:num_examples]]  # task has no inputs
        for feature in features:
            unk = getattr(task.output_features[feature].vocabulary, "unk_id", None)
            token_lengths = np.array([len(r[feature]) for r in rows])
            tokens = np.concatenate([r[feature] for r in rows]) if rows else np.zeros(0)
            limit = lengths.get(feature)
            truncated = f"{float(np.mean(token_lengths > limit)) if rows else 0.0:>8.2%}" if limit else f"{'-':>8}"
            unk_rate = float(np.mean(tokens == unk)) if tokens.size and unk is not None else 0.0
            cells = "".join(f"{_percentile(token_lengths, p):>7}" for p in PERCENTILES)
            rows_of_stats.append((task.name, feature, f"{len(rows):>7}{cells}{truncated}{unk_rate:>9.4%}"))
    feature_width = max(len("feature"), *(len(feature) for _, feature, _ in rows_of_stats), 0) + 2
    header = f"  {'task':<{width}}{'feature':<{feature_width}}{'n':>7}" + "".join(f"{'p' + str(p):>7}" for p in PERCENTILES)
    out.append(f"token lengths (first {max_examples} examples per task; '>len' = truncated at {lengths}):")
    out.append(header + f"{'>len':>8}{'unk':>9}")
    out += [f"  {task:<{width}}{feature:<{feature_width}}{cells}" for task, feature, cells in rows_of_stats]
    out += vocabulary_lines
    out.append("examples:")
    for task, features, row in examples:
        out.append(f"  [{task.name}]")
        for feature in features:
            ids = row[feature].tolist()
            if f"{feature}_pretokenized" in row:
                raw, what = row[f"{feature}_pretokenized"].decode(), feature
            else:  # tokenized with copy_pretokenized=False: a KeyError before
                raw, what = task.output_features[feature].vocabulary.decode(ids), f"{feature} (decoded: no raw text)"
            out.append(f"    {what}: {raw[:160]}{'...' if len(raw) > 160 else ''}")
            out.append(f"    {feature} ids ({len(ids)}): {ids[:24]}{' ...' if len(ids) > 24 else ''}")
    out.append("skipped rows:")
    out.append(report.format(max_lines=sys.maxsize) if report.files else "  none")  # all: the command that lists them
    return "\n".join(out)


def registered() -> str:
    """The registered mixtures and tasks, one per line: what MIXTURE_OR_TASK_NAME and --mixture/--task take."""
    import seqio

    from textchem_jax.run_config import register_our_tasks

    register_our_tasks()
    return "\n".join([
        "mixtures:", *(f"  {name}" for name in sorted(seqio.MixtureRegistry.names())),
        "tasks:", *(f"  {name}" for name in sorted(seqio.TaskRegistry.names())),
    ])  # fmt: skip


def _check_embedding(folder: str, vocabulary) -> None:
    """Refuses a vocabulary that does not fit the embedding of the model in `folder` where a config records its
    size (Hugging Face's config.json, textchem-convert's t5_config.json), as training does: ids up to 998 were
    reported against an embedding of 500 rows without a word."""
    import json

    import tensorflow as tf

    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.models.hf_convert import CONFIG_FILE
    from textchem_jax.run_results import CONVERTED_CONFIG_FILE

    for name in (CONFIG_FILE, CONVERTED_CONFIG_FILE):
        file = f"{folder.rstrip('/')}/{name}"
        if not tf.io.gfile.exists(file):
            continue
        with tf.io.gfile.GFile(file) as f:
            rows = json.load(f).get("vocab_size")
        if isinstance(rows, int) and not vocabularies.fits_embedding(vocabulary, rows):
            raise ValueError(
                f"--vocabulary {folder}: its vocabulary {vocabularies.vocabulary_file(vocabulary)} has "
                f"{vocabulary.vocab_size:,} pieces ({vocabularies.fitting_rows(vocabulary)}) but the model's embedding "
                f"has {rows:,} rows ({file}): give the folder or .model file of the vocabulary it was trained with")  # fmt: skip


def _use_vocabulary(path: str):
    """The tasks tokenize with `path` (a .model file, or a checkpoint folder that brings one, checked against the
    folder's model); returns that vocabulary."""
    import tensorflow as tf

    from textchem_jax.data import seqio_tasks
    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.run_config import register_our_tasks

    register_our_tasks()

    if tf.io.gfile.isdir(path):
        loaded = vocabularies.checkpoint_vocabulary(path, flag="--vocabulary")
        _check_embedding(path, loaded)
    else:
        loaded = vocabularies.load_vocabulary(path, flag="--vocabulary")
    seqio_tasks.use_vocabulary(loaded)
    return loaded


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="textchem-inspect", description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--mixture", help="a registered mixture, e.g. textchem_standard")
    which.add_argument("--task", help="a registered task, e.g. textchem_text2mol")
    which.add_argument("--list", action="store_true", help="list the registered mixtures and tasks")
    parser.add_argument("--module_import", action="append", default=[],
                        help="a module that registers your own tasks (MIXTURE_OR_TASK_MODULE); repeatable")  # fmt: skip
    parser.add_argument("--split", default="validation", type=split_expression,
                        help="a split, or a slice of one: validation[:100], train[:50%%] (default: validation)")
    parser.add_argument("--task_feature_lengths", type=feature_lengths, default=DEFAULT_LENGTHS,
                        help="inputs=N,targets=M or gin's {'inputs': N, 'targets': M}, for the '>len' column; a "
                        "feature not given keeps 512 (default: inputs=512,targets=512)")  # fmt: skip
    parser.add_argument("--num_examples", type=at_least(0), default=2, help="examples shown per task")
    parser.add_argument("--max_examples", type=at_least(1), default=5000, help="examples per task used for statistics")
    parser.add_argument("--data_dir", help="data folder (default: TEXTCHEM_DATA_DIR)")
    parser.add_argument("--vocabulary", help="a SentencePiece model, or a checkpoint folder (textchem-convert "
                        "output or MODEL_DIR) whose spiece.model the tasks should use")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="show library logs")
    args = parse_args(parser, argv)
    if not args.verbose:  # TensorFlow's and CUDA's start-up lines, absl INFO logs
        quiet_libraries()
    from textchem_jax.data.datasets import NoDataFolder, set_data_dir

    if args.data_dir:
        set_data_dir(args.data_dir)
    try:
        vocabulary = None
        if args.vocabulary:  # first: a user's tasks take the vocabulary set when their module is imported
            vocabulary = _use_vocabulary(args.vocabulary)
        for module in args.module_import:
            import_task_module(module)
        if args.list:
            print(registered())
        else:
            print(inspect(args.mixture or args.task, args.split, args.task_feature_lengths, args.num_examples,
                          args.max_examples, vocabulary))  # fmt: skip
    except NoDataFolder:  # its own words name textchem-train's gin macro
        print(f"textchem-inspect: {NoDataFolder('--data_dir=DIR')}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as error:
        print(f"textchem-inspect: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
