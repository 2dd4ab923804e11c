"""`textchem-vocab`: train the chemistry-aware SentencePiece vocabulary and check it round-trips.

Texts come from `--input` files (`.txt` one per line, `.jsonl` source/target, `.tsv`/`.csv` with a header, a ChEBI-20
`.txt` its SMILES and descriptions; each also as a one-file `.tar.gz`; rows that give no text are skipped and listed)
and from `--mixture` (the prompted inputs and targets of a registered task or mixture). The shipped
default `textchem_jax/data/vocab/textchem_demo.model` is built from the demo corpus:

  textchem-vocab --mixture=textchem_demo --output_prefix=textchem_jax/data/vocab/textchem_demo --vocab_size=1000

Prints the model path, its size and whether every training text round-trips without `<unk>`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

from textchem_jax.cli import at_least, command, parse_args, quiet_libraries
from textchem_jax.data import datasets
from textchem_jax.data import vocabulary as vocab_lib
from textchem_jax.progress import Heartbeat, ProgressLine
from textchem_jax.run_config import import_task_module, mixture_or_task, register_our_tasks


def task_texts(task: str, pairs: list[tuple[str, str]]) -> list[str]:
    """What the model reads and writes for a task: prompt + input, and target."""
    prompt = datasets.PROMPTS[task]
    return [text for source, target in pairs for text in (prompt + source, target)]


def mixture_tasks(name: str) -> list:
    """The SeqIO tasks of a registered task or mixture."""
    import seqio

    register_our_tasks()
    provider = mixture_or_task(name)
    return list(provider.tasks) if isinstance(provider, seqio.Mixture) else [provider]


def seqio_task_texts(task, split: str = "train") -> list[str]:
    """Texts of one SeqIO task: ours straight from the data files, a user's own as their `inputs_pretokenized`
    and `targets_pretokenized` (as SeqIO gives them)."""
    from textchem_jax.data.seqio_tasks import SPECS

    if task.name in SPECS:  # ours: without tokenizing
        return task_texts(SPECS[task.name].task, SPECS[task.name].pairs(split))
    texts = []
    for example in task.get_dataset(None, split=split, shuffle=False).as_numpy_iterator():
        raw = sorted(key for key in example if key.endswith("_pretokenized"))  # inputs, then targets
        if not raw:  # said "no texts: give --input or --mixture" though --mixture was given
            raise ValueError(f"task {task.name} has no *_pretokenized features (its features: {', '.join(example)}; "
                             "tokenized with copy_pretokenized=False?), so it has no texts to train on: give its "
                             "texts as --input files, or tokenize it with copy_pretokenized=True")  # fmt: skip
        texts += [example[key].decode() for key in raw]
    return texts


def mixture_texts(name: str, split: str = "train") -> list[str]:
    """Texts of every task of a registered task or mixture (e.g. `textchem_demo`, or a user's own)."""
    return [text for task in mixture_tasks(name) for text in seqio_task_texts(task, split)]


PROGRESS_PERIOD = 30.0  # seconds between two progress lines of one phase, at most


class _ReadProgress(ProgressLine):
    """Progress over sources of texts (files, tasks), naming the last one read and its count; no rate or ETA, as
    one source's size says nothing of the next's (USPTO-MIT has ten times ChEBI-20's rows)."""

    def __init__(self, total: int, unit: str):
        super().__init__("reading", total, unit, period=PROGRESS_PERIOD)
        self.texts, self.last = 0, ""

    def read(self, name: str, count: int) -> None:
        self.texts += count
        self.last = f"{name}: {count:,} texts"
        self.advance(1)

    def line(self, now: float, eta: float | None) -> str:
        return f"  {self.last} ({self.done}/{self.total} {self.unit}, {self.texts:,} texts in {now - self.start:.0f} s)"


def _read_texts(inputs: list[str], mixture: str | None, split: str) -> list[str]:
    """Every text to train on, saying what is read: a mixture's train split takes minutes."""
    from textchem_jax.data.sources import SkipReport

    texts = []
    if inputs:
        print(f"reading {len(inputs)} --input file(s) ...", flush=True)
        progress, report = _ReadProgress(len(inputs), "files"), SkipReport()
        for path in inputs:
            got = vocab_lib.read_texts(path, report=report)
            texts += got
            progress.read(path, len(got))
        if any(file.has_issues for file in report.files.values()):  # rows that give no text: said, with their lines
            print(f"warning: --input rows skipped or kept with a fault:\n{report.format(issues_only=True)}", file=sys.stderr)
    if mixture:
        seqio_tasks = mixture_tasks(mixture)
        names = ", ".join(task.name for task in seqio_tasks)
        print(f"reading the {split} split of {mixture}: {len(seqio_tasks)} task(s) ({names}) ...", flush=True)
        progress = _ReadProgress(len(seqio_tasks), "tasks")
        for task in seqio_tasks:
            got = [text for text in seqio_task_texts(task, split) if text.strip()]  # counted as trained on: non-blank
            texts += got
            progress.read(task.name, len(got))
    return texts


ROUND_TRIP_CHUNK = 10_000  # texts checked between two looks at the clock


def _check_round_trip(vocabulary, texts: list[str]) -> vocab_lib.RoundTrip:
    """`check_round_trip` in chunks, with a progress line: a train split has millions of texts."""
    progress = ProgressLine("checking the round trip", len(texts), "texts", period=PROGRESS_PERIOD)
    checked, mismatched, with_unk = 0, [], []
    for start in range(0, len(texts), ROUND_TRIP_CHUNK):
        part = vocab_lib.check_round_trip(vocabulary, texts[start : start + ROUND_TRIP_CHUNK])
        checked, mismatched, with_unk = checked + part.checked, mismatched + part.mismatched, with_unk + part.with_unk
        progress.advance(part.checked)
    return vocab_lib.RoundTrip(checked, mismatched, with_unk)


def _training_failure(message: str, vocab_size: int, soft_limit: bool, texts: list[str]) -> str:
    """SentencePiece's error in our flags' terms: it suggests its own --character_coverage, which we do not take."""
    required = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
    if required:  # pieces every vocabulary of ours holds: --soft_vocab_limit cannot help
        distinct = len(set("".join(texts)))
        return (f"--vocab_size={vocab_size} is below the {required.group(1)} pieces every vocabulary of these texts "
                f"holds (their {distinct} distinct characters, the 256 byte pieces that keep unseen characters off "
                f"<unk>, and the SMILES symbols): give a --vocab_size of at least {required.group(1)}")  # fmt: skip
    most = _TOO_MANY_PIECES.search(message)
    if most and not soft_limit:
        return (f"--vocab_size={vocab_size} is more pieces than these {len(texts):,} texts make (at most "
                f"{most.group(1)}): give --vocab_size={most.group(1)} or less, or --soft_vocab_limit to allow fewer")  # fmt: skip
    return f"training failed: {_SENTENCEPIECE_PLACE.sub('', message.strip())}"


_TOO_MANY_PIECES = re.compile(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)")
# SentencePiece's own prefix to its messages: `INTERNAL: src/trainer_interface.cc(744) [(a) == (b)] `.
_SENTENCEPIECE_PLACE = re.compile(r"^[A-Z_]+: \S+\(\d+\) \[[^\]]*\] ")


def _check_outputs(prefix: str, files: list[str], overwrite: bool) -> None:
    """Refuses, before the texts are read and trained on (minutes to hours), `files` that exist (a run's
    spiece.model was replaced without a word) unless `overwrite`, and a prefix in no writable folder (a missing
    gs:// bucket, a folder that is a file: training ended in a bare "[Errno 17] File exists")."""
    from textchem_jax.data.sources import exists
    from textchem_jax.paths import check_writable_folder, makedirs

    folder = os.path.dirname(prefix) or "."  # a string operation: gs://bucket/x/v gives gs://bucket/x
    check_writable_folder(folder, "--output_prefix")
    makedirs(folder)  # on gs://, checks the bucket
    existing = [file for file in files if exists(file)]
    if existing and not overwrite:
        raise FileExistsError(f"{' and '.join(existing)} already exists (a run's vocabulary?): give another "
                              "--output_prefix, or --overwrite to replace it")  # fmt: skip


def _train_plain(texts: list[str], prefix: str, vocab_size: int, soft_limit: bool) -> str:
    """The plain SentencePiece model for --compare_plain; at the most pieces the texts make when that is fewer than
    `vocab_size` (it has no byte pieces to fill the size with), saying so."""
    try:
        with Heartbeat("training plain SentencePiece", period=PROGRESS_PERIOD):
            return vocab_lib.train_plain_vocabulary(texts, prefix, vocab_size=vocab_size, hard_vocab_limit=not soft_limit)
    except RuntimeError as error:  # passed on SentencePiece's INTERNAL words and C++ place
        most = _TOO_MANY_PIECES.search(str(error))
        if not most:
            raise RuntimeError(_training_failure(str(error), vocab_size, soft_limit, texts)) from None
    print(f"  plain SentencePiece: these texts make at most {most.group(1)} of its pieces (it has no byte pieces), "
          f"so it is trained with {most.group(1)}, not {vocab_size}")  # fmt: skip
    with Heartbeat("training plain SentencePiece", period=PROGRESS_PERIOD):
        return vocab_lib.train_plain_vocabulary(texts, prefix, vocab_size=int(most.group(1)))


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="textchem-vocab", description=__doc__.splitlines()[0])
    source = parser.add_argument_group("texts (at least one)")
    source.add_argument("--input", nargs="+", action="extend", default=[], help="text files (repeatable): .txt lines, .jsonl input/target, .tsv/.csv with a header, a ChEBI-20 .txt (each also as a one-file .tar.gz)")
    source.add_argument("--mixture", help="a registered task or mixture: its prompted inputs and targets")
    parser.add_argument("--module_import", action="append", default=[],
                        help="a module that registers your own tasks (MIXTURE_OR_TASK_MODULE); repeatable")  # fmt: skip
    parser.add_argument("--split", default="train", help="split of --mixture to read (default: train)")
    parser.add_argument("--data_dir", help="data folder for --mixture (default: TEXTCHEM_DATA_DIR)")
    parser.add_argument("--output_prefix", required=True, help="writes OUTPUT_PREFIX.model (gs:// works too)")
    parser.add_argument("--vocab_size", type=at_least(1), default=8000)
    parser.add_argument("--soft_vocab_limit", action="store_true", help="allow fewer pieces on a small corpus")
    parser.add_argument("--compare_plain", action="store_true",
                        help="also train plain SentencePiece (OUTPUT_PREFIX_plain.model), compare")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT_PREFIX.model (and _plain.model) if "
                        "it exists; without it, an existing one is refused before training")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="show library logs")
    args = parse_args(parser, argv)
    if not args.verbose:  # TensorFlow's and CUDA's start-up lines, absl INFO logs
        quiet_libraries()
    if args.output_prefix.endswith("/") or not os.path.basename(args.output_prefix):  # it wrote a hidden `.model`
        parser.error(f"--output_prefix={args.output_prefix} is a folder: name the files, e.g. {os.path.join(args.output_prefix, 'textchem')}")
    if args.module_import and not args.mixture:  # its tasks were registered and never read
        parser.error("--module_import registers tasks for --mixture, which is not given: give --mixture=YOUR_TASK too")
    outputs = [f"{args.output_prefix}{suffix}.model" for suffix in ("", "_plain")[: 1 + args.compare_plain]]
    try:
        _check_outputs(args.output_prefix, outputs, args.overwrite)
    except OSError as error:
        print(f"textchem-vocab: {error}", file=sys.stderr)
        return 2

    try:
        if args.mixture:
            if args.data_dir:
                datasets.set_data_dir(args.data_dir)
            for module in args.module_import:
                import_task_module(module)
        texts = _read_texts(args.input, args.mixture, args.split)
    except datasets.NoDataFolder:
        print(f"textchem-vocab: cannot read texts: {datasets.NoDataFolder('--data_dir=DIR')}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError) as error:
        print(f"textchem-vocab: cannot read texts: {error}", file=sys.stderr)
        return 2
    if not texts and not (args.input or args.mixture):
        parser.error("no texts: give --input or --mixture")
    if not texts:  # a data problem, not a usage one: one line
        where = ", ".join(args.input + ([f"the {args.split} split of {args.mixture}"] if args.mixture else []))
        print(f"textchem-vocab: no texts in {where} (a .jsonl row's {', '.join(vocab_lib.JSONL_TEXT_KEYS)} strings are "
              "read; blank ones are left out)", file=sys.stderr)  # fmt: skip
        return 2

    print(f"training SentencePiece on {len(texts):,} texts (--vocab_size={args.vocab_size}) ...", flush=True)
    start = time.perf_counter()
    try:
        with Heartbeat("training SentencePiece", period=PROGRESS_PERIOD):
            path = vocab_lib.train_vocabulary(
                texts, args.output_prefix, vocab_size=args.vocab_size, hard_vocab_limit=not args.soft_vocab_limit
            )
    except (RuntimeError, ValueError) as error:  # SentencePiece's words, and its flags, which are not ours
        print(f"textchem-vocab: {_training_failure(str(error), args.vocab_size, args.soft_vocab_limit, texts)}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    vocabulary = vocab_lib.load_vocabulary(path)
    size, extra = vocabulary.vocab_size, vocab_lib.T5_EXTRA_IDS
    print(f"Wrote {path} ({seconds:.1f} s, {len(texts)} texts)")
    print(f"  {size - extra} pieces; seqio vocabulary size with {extra} extra ids: {size}", flush=True)
    check = _check_round_trip(vocabulary, texts)
    exact = check.checked - len(check.mismatched)
    print(f"  round trip: {exact}/{check.checked} exact, {len(check.with_unk)} with <unk>")
    smiles = vocab_lib.smiles_in_texts(texts)
    if smiles:
        print(f"  tokens per SMILES: {vocab_lib.tokens_per_string(vocabulary, smiles):.2f} ({len(smiles)} SMILES)")
    if args.compare_plain and smiles:
        try:
            plain = _train_plain(texts, f"{args.output_prefix}_plain", args.vocab_size, args.soft_vocab_limit)
        except RuntimeError as error:
            print(f"  plain SentencePiece not trained: {error}")
        else:
            per_smiles = vocab_lib.tokens_per_string(plain, smiles)
            print(f"  plain SentencePiece ({plain}): {per_smiles:.2f} tokens per SMILES")
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
