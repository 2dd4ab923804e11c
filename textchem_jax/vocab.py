"""`textchem-vocab`: train the chemistry-aware SentencePiece vocabulary and check it round-trips.

Texts come from `--input` files (`.txt` one per line, `.jsonl` source/target, `.tsv` with a header)
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

from textchem_jax import launch
from textchem_jax.cli import at_least, command, parse_args
from textchem_jax.data import datasets
from textchem_jax.data import vocabulary as vocab_lib
from textchem_jax.run_config import import_task_module, mixture_or_task


def task_texts(task: str, pairs: list[tuple[str, str]]) -> list[str]:
    """What the model reads and writes for a task: prompt + input, and target."""
    prompt = datasets.PROMPTS[task]
    return [text for source, target in pairs for text in (prompt + source, target)]


def mixture_texts(name: str, split: str = "train") -> list[str]:
    """Texts of every task of a registered task or mixture (e.g. `textchem_demo`, or a user's own: their
    `inputs_pretokenized` and `targets_pretokenized`, as SeqIO gives them)."""
    import seqio

    import tasks  # noqa: F401  (registers ours)
    from textchem_jax.data.seqio_tasks import SPECS

    provider = mixture_or_task(name)
    texts = []
    for task in provider.tasks if isinstance(provider, seqio.Mixture) else [provider]:
        if task.name in SPECS:  # ours: straight from the data files, without tokenizing
            texts += task_texts(SPECS[task.name].task, SPECS[task.name].pairs(split))
            continue
        for example in task.get_dataset(None, split=split, shuffle=False).as_numpy_iterator():
            texts += [example[f"{feature}_pretokenized"].decode() for feature in ("inputs", "targets")
                      if f"{feature}_pretokenized" in example]  # fmt: skip
    return texts


def _training_failure(message: str, vocab_size: int, soft_limit: bool, texts: list[str]) -> str:
    """SentencePiece's error in our flags' terms: it suggests its own --character_coverage, which we do not take."""
    required = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
    if required:  # pieces every vocabulary of ours holds: --soft_vocab_limit cannot help
        distinct = len(set("".join(texts)))
        return (f"--vocab_size={vocab_size} is below the {required.group(1)} pieces every vocabulary of these texts "
                f"holds (their {distinct} distinct characters, the 256 byte pieces that keep unseen characters off "
                f"<unk>, and the SMILES symbols): give a --vocab_size above {required.group(1)}")  # fmt: skip
    if "Vocabulary size too high" in message and not soft_limit:
        return f"training failed: {message.strip()} (or pass --soft_vocab_limit to allow fewer pieces)"
    return f"training failed: {message.strip()}"


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="textchem-vocab", description=__doc__.splitlines()[0])
    source = parser.add_argument_group("texts (at least one)")
    source.add_argument("--input", nargs="+", default=[], help="text files: .txt lines, .jsonl source/target, .tsv")
    source.add_argument("--mixture", help="a registered task or mixture: its prompted inputs and targets")
    parser.add_argument("--module_import", action="append", default=[],
                        help="a module that registers your own tasks (MIXTURE_OR_TASK_MODULE); repeatable")  # fmt: skip
    parser.add_argument("--split", default="train", help="split of --mixture to read (default: train)")
    parser.add_argument("--data_dir", help="data folder for --mixture (default: TEXTCHEM_DATA_DIR)")
    parser.add_argument("--output_prefix", required=True, help="writes OUTPUT_PREFIX.model (gs:// works too)")
    parser.add_argument("--vocab_size", type=at_least(1), default=8000)
    parser.add_argument("--soft_vocab_limit", action="store_true", help="allow fewer pieces on a small corpus")
    parser.add_argument("--compare_plain", action="store_true", help="also train plain SentencePiece, compare")
    parser.add_argument("--verbose", action="store_true", help="show library logs")
    args = parse_args(parser, argv)
    if not args.verbose:  # TensorFlow's and CUDA's start-up lines, absl INFO logs
        launch.quiet_libraries()
    if args.output_prefix.endswith("/") or not os.path.basename(args.output_prefix):  # it wrote a hidden `.model`
        parser.error(f"--output_prefix={args.output_prefix} is a folder: name the files, e.g. {os.path.join(args.output_prefix, 'textchem')}")

    texts = []
    try:
        for path in args.input:
            texts += vocab_lib.read_texts(path)
        if args.mixture:
            if args.data_dir:
                datasets.set_data_dir(args.data_dir)
            for module in args.module_import:
                import_task_module(module)
            texts += mixture_texts(args.mixture, args.split)
    except (OSError, ValueError, KeyError) as error:
        print(f"textchem-vocab: cannot read texts: {error}", file=sys.stderr)
        return 2
    if not texts:
        parser.error(f"no texts in {', '.join(args.input)}" if args.input and not args.mixture else "no texts: give --input or --mixture")

    start = time.perf_counter()
    try:
        path = vocab_lib.train_vocabulary(
            texts, args.output_prefix, vocab_size=args.vocab_size, hard_vocab_limit=not args.soft_vocab_limit
        )
    except RuntimeError as error:  # SentencePiece's words, and its flags, which are not ours
        print(f"textchem-vocab: {_training_failure(str(error), args.vocab_size, args.soft_vocab_limit, texts)}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    vocabulary = vocab_lib.load_vocabulary(path)
    check = vocab_lib.check_round_trip(vocabulary, texts)
    size, extra = vocabulary.vocab_size, vocab_lib.T5_EXTRA_IDS
    print(f"Wrote {path} ({seconds:.1f} s, {len(texts)} texts)")
    print(f"  {size - extra} pieces; seqio vocabulary size with {extra} extra ids: {size}")
    exact = check.checked - len(check.mismatched)
    print(f"  round trip: {exact}/{check.checked} exact, {len(check.with_unk)} with <unk>")
    smiles = vocab_lib.smiles_in_texts(texts)
    if smiles:
        print(f"  tokens per SMILES: {vocab_lib.tokens_per_string(vocabulary, smiles):.2f} ({len(smiles)} SMILES)")
    if args.compare_plain and smiles:
        prefix, hard = f"{args.output_prefix}_plain", not args.soft_vocab_limit
        try:
            plain = vocab_lib.train_plain_vocabulary(texts, prefix, vocab_size=args.vocab_size, hard_vocab_limit=hard)
        except RuntimeError as error:  # plain has no byte pieces, so a small corpus may not fill the size
            print(f"  plain SentencePiece not trained at this size: {error}")
        else:
            per_smiles = vocab_lib.tokens_per_string(plain, smiles)
            print(f"  plain SentencePiece ({plain}): {per_smiles:.2f} tokens per SMILES")
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
