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


def feature_lengths(text: str) -> dict[str, int]:
    """`inputs=512,targets=512`, or gin's TASK_FEATURE_LENGTHS as copied from a gin file (`{'inputs': 512,
    'targets': 512}`) -> {"inputs": 512, "targets": 512} (an argparse type)."""
    expected = f"expected inputs=N,targets=M or {{'inputs': N, 'targets': M}}, got {text!r}"
    if text.strip().startswith("{"):
        try:
            items = [(str(key), str(value)) for key, value in ast.literal_eval(text.strip()).items()]
        except (ValueError, SyntaxError, AttributeError):
            raise argparse.ArgumentTypeError(expected) from None
    else:
        items = [item.partition("=")[::2] for item in text.split(",")]
    lengths = {}
    for key, value in items:
        if key.strip() not in ("inputs", "targets") or not value.strip().isdigit() or int(value) < 1:
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


def inspect(name: str, split: str, lengths: dict[str, int], num_examples: int, max_examples: int) -> str:
    """The whole report for one task or mixture, as text."""
    import seqio

    from textchem_jax.data.seqio_tasks import SPECS
    from textchem_jax.data.sources import SkipReport
    from textchem_jax.run_config import has_split, task_splits, mixture_or_task, register_our_tasks

    register_our_tasks()

    provider = mixture_or_task(name)
    members = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
    out = [f"== {name} ({split}) =="]
    if isinstance(provider, seqio.Mixture):
        rates = {t.name: provider.get_rate(t) for t in members}
        total = sum(rates.values())
        if not total > 0 or any(not rate >= 0 for rate in rates.values()):  # registered through seqio: ours refuses
            raise ValueError(f"mixture {name}: the rates {rates} must each be >= 0, one > 0")  # was ZeroDivisionError
        out.append("effective mixture rates:")
        out += [f"  {task:<34}{rate / total:8.4f}" for task, rate in rates.items()]
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
    report = SkipReport()
    header = f"  {'task':<34}{'feature':<9}{'n':>7}" + "".join(f"{'p' + str(p):>7}" for p in PERCENTILES)
    stats = [header + f"{'>len':>8}{'unk':>9}"]
    examples = []
    for task in members:
        if task.name in SPECS:  # ours: read from the data files, with their skipped rows counted
            SPECS[task.name].pairs(split, report=report)
        vocab = task.output_features["targets"].vocabulary
        unk = vocab.unk_id
        ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, use_cached=False)
        rows = list(ds.take(max_examples).as_numpy_iterator())
        examples += [(task.name, row) for row in rows[:num_examples]]
        for feature in ("inputs", "targets"):
            token_lengths = np.array([len(r[feature]) for r in rows])
            tokens = np.concatenate([r[feature] for r in rows]) if rows else np.zeros(0)
            truncated = float(np.mean(token_lengths > lengths[feature])) if rows else 0.0
            unk_rate = float(np.mean(tokens == unk)) if tokens.size else 0.0
            cells = "".join(f"{int(np.percentile(token_lengths, p)) if rows else 0:>7}" for p in PERCENTILES)
            stats.append(f"  {task.name:<34}{feature:<9}{len(rows):>7}{cells}{truncated:>8.2%}{unk_rate:>9.4%}")
    out.append(f"token lengths (first {max_examples} examples per task; '>len' = truncated at {lengths}):")
    out += stats
    out.append("examples:")
    for task_name, row in examples:
        out.append(f"  [{task_name}]")
        for feature in ("inputs", "targets"):
            raw = row[f"{feature}_pretokenized"].decode()
            out.append(f"    {feature}: {raw[:160]}{'...' if len(raw) > 160 else ''}")
            ids = row[feature].tolist()
            out.append(f"    {feature} ids ({len(ids)}): {ids[:24]}{' ...' if len(ids) > 24 else ''}")
    out.append("skipped rows:")
    out.append(report.format(max_lines=8) if report.files else "  none")
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


def _use_vocabulary(path: str) -> None:
    """The tasks tokenize with `path` (a .model file, or a checkpoint folder that brings one)."""
    import tensorflow as tf

    from textchem_jax.data import seqio_tasks
    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.run_config import register_our_tasks

    register_our_tasks()

    loaded = vocabularies.checkpoint_vocabulary(path) if tf.io.gfile.isdir(path) else vocabularies.load_vocabulary(path)
    seqio_tasks.use_vocabulary(loaded)


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
    parser.add_argument("--task_feature_lengths", type=feature_lengths, default={"inputs": 512, "targets": 512})
    parser.add_argument("--num_examples", type=at_least(0), default=2, help="examples shown per task")
    parser.add_argument("--max_examples", type=at_least(1), default=5000, help="examples per task used for statistics")
    parser.add_argument("--data_dir", help="data folder (default: TEXTCHEM_DATA_DIR)")
    parser.add_argument("--vocabulary", help="a SentencePiece model, or a checkpoint folder (textchem-convert "
                        "output or MODEL_DIR) whose spiece.model the tasks should use")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="show library logs")
    args = parse_args(parser, argv)
    if not args.verbose:  # TensorFlow's and CUDA's start-up lines, absl INFO logs
        quiet_libraries()
    if args.data_dir:
        from textchem_jax.data.datasets import set_data_dir

        set_data_dir(args.data_dir)
    try:
        if args.vocabulary:  # first: a user's tasks take the vocabulary set when their module is imported
            _use_vocabulary(args.vocabulary)
        for module in args.module_import:
            import_task_module(module)
        if args.list:
            print(registered())
        else:
            print(inspect(args.mixture or args.task, args.split, args.task_feature_lengths, args.num_examples, args.max_examples))
    except (FileNotFoundError, ValueError) as error:
        print(f"textchem-inspect: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
