"""Molecule-captioning metrics with the MolT5 / ChEBI-20 reference semantics.

- `rouge1`, `rouge2`, `rougeL`: mean F-measure from Google's `rouge-score` (default tokenizer, no
  stemming), exactly as the MolT5 scripts call it.
- `bleu2`, `bleu4`: NLTK `corpus_bleu` (weights (.5, .5) and (.25,) * 4) over word tokens.
- `meteor`: mean NLTK `meteor_score` over the same tokens; None (with a warning) without WordNet.

The reference tokenizes with SciBERT word pieces (`allenai/scibert_scivocab_uncased`): `tokenize(text,
truncation=True, max_length=512, padding='max_length')` under transformers 4.x, i.e. the first 512 word pieces
with no [CLS]/[SEP] added, then [PAD], [CLS] and [SEP] removed ([UNK] stays: an unknown word still counts).
Pass `tokenizer=` the folder (local or gs://) of that tokenizer (needs the `hf` extra) to reproduce its BLEU and
METEOR; the default is `word_tokenize`: BERT's basic tokenization (lower case, accents stripped, punctuation
split off), i.e. SciBERT without the word-piece split, truncated the same way (512 tokens).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import unicodedata
from collections.abc import Callable, Sequence

from textchem_jax.metrics._inputs import as_text, check_lengths, top1
from textchem_jax.metrics.bleu import corpus_bleu
from textchem_jax.metrics.wordnet import load_wordnet
from textchem_jax.paths import is_remote

MAX_TOKENS = 512  # the reference's max_length; it adds no [CLS]/[SEP], so all 512 are the text's
_REMOVED = ("[PAD]", "[CLS]", "[SEP]")  # what the reference filters out of its tokens (by these names)
# BERT's "Chinese characters": the CJK ideograph blocks, each made a token of its own
_CJK_BLOCKS = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))  # fmt: skip


def _is_punctuation(char: str) -> bool:
    """BERT's punctuation: every ASCII non-alphanumeric printable, and Unicode category P* (not symbols: `°`)."""
    code = ord(char)
    return 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126 or (
        unicodedata.category(char).startswith("P"))  # fmt: skip


def _bert_cleaned(char: str) -> str:
    """BERT's character clean-up: whitespace as a space, NUL, U+FFFD and control characters dropped, CJK
    ideographs spaced out."""
    category = unicodedata.category(char)
    if char in " \t\n\r" or category == "Zs":
        return " "
    if char in "\0\ufffd" or category.startswith("C"):
        return ""
    if any(low <= ord(char) <= high for low, high in _CJK_BLOCKS):
        return f" {char} "
    return char


def _split_off_punctuation(word: str) -> list[str]:
    pieces, current = [], ""
    for char in word:
        if _is_punctuation(char):
            pieces.extend([current, char] if current else [char])
            current = ""
        else:
            current += char
    return pieces + [current] if current else pieces


def word_tokenize(text: str) -> list[str]:
    """BERT's uncased basic tokenization (transformers' `BasicTokenizer`), the first 512 tokens.

    Split on whitespace; each word lower-cased, accents stripped, punctuation (not symbols) split off. A regex that
    split off every non-word character made `162℃`, `°c` and `r→s` two or three tokens: 6 of ChEBI-20's 6,601 test
    and validation descriptions tokenized differently from BERT's.
    """
    text = unicodedata.normalize("NFC", "".join(_bert_cleaned(char) for char in text))
    tokens = []
    for word in text.split():
        word = unicodedata.normalize("NFD", word.lower())
        tokens.extend(_split_off_punctuation("".join(c for c in word if unicodedata.category(c) != "Mn")))
    return tokens[:MAX_TOKENS]


def check_tokenizer(path: str) -> None:
    """Loads the caption tokenizer a run names (gin: CAPTION_TOKENIZER) before the run decodes anything: a wrong
    path was met in the metrics, after the whole split was decoded, and lost the predictions."""
    _hf_tokenize(path)


def _copy_files(folder: str, local: str) -> None:
    """The files of a gs:// (or other remote) tokenizer folder copied into the local folder `local`: transformers
    reads only local folders."""
    import tensorflow as tf  # remote paths only go through tf.io.gfile

    for name in tf.io.gfile.listdir(folder):
        source = f"{folder.rstrip('/')}/{name.rstrip('/')}"
        if not tf.io.gfile.isdir(source):  # a tokenizer's files; subfolders are not part of it
            tf.io.gfile.copy(source, os.path.join(local, name.rstrip("/")))


@functools.cache
def _hf_tokenize(path: str) -> Callable[[str], list[str]]:
    """The reference's tokenization with the Hugging Face tokenizer in the folder `path` (local or gs://)."""
    try:
        from transformers import AutoTokenizer
    except ImportError as error:
        raise ImportError(
            f"tokenizer={path!r} needs Hugging Face transformers: pip install 'textchem_jax[hf]'"
        ) from error
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"mol2text_metrics: tokenizer={path!r}: give the path of a Hugging Face tokenizer folder")
    path = os.fspath(path)
    import tensorflow as tf  # local or gs://

    remote = is_remote(path)
    if not tf.io.gfile.isdir(path):  # a missing folder would read as a hub id: nothing is downloaded
        raise ValueError(f"mol2text_metrics: the caption tokenizer {path!r} is not a {'' if remote else 'local '}folder: "
                         "give the folder (local or gs://) of a Hugging Face tokenizer (e.g. SciBERT's, saved with "
                         "save_pretrained), or none for BERT's basic tokenization")  # fmt: skip
    local = tempfile.mkdtemp(prefix="textchem-caption-tokenizer-") if remote else None  # removed once loaded
    try:
        if local:
            _copy_files(path, local)
        tokenizer = AutoTokenizer.from_pretrained(local or path, local_files_only=True)
    except Exception as error:  # OSError, ValueError; tf.errors.OpError copying from gs://: said as one line  # a missing folder reads as a hub id: "Repo id must be in the form ..."
        reason = str(error).strip().splitlines()[0]
        raise ValueError(f"mol2text_metrics: no Hugging Face tokenizer in {path!r}: give a folder that holds one "
                         f"(e.g. SciBERT's, saved with save_pretrained), or none for BERT's basic tokenization ({reason})") from None  # fmt: skip
    finally:
        if local:
            shutil.rmtree(local, ignore_errors=True)  # local only: our own temporary copy

    def tokenize(text: str) -> list[str]:
        # transformers 5 ignores truncation in `tokenize` (4.x, the reference's, passed it on to the encoding)
        ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=MAX_TOKENS)["input_ids"]
        return [t for t in tokenizer.convert_ids_to_tokens(ids) if t not in _REMOVED]

    return tokenize


def meteor(references: list[list[str]], hypotheses: list[list[str]]) -> float | None:
    """Mean NLTK METEOR over token lists, or None when WordNet is not installed."""
    from nltk.translate.meteor_score import meteor_score

    wordnet = load_wordnet()
    if wordnet is None:
        return None
    scores = [meteor_score([r], h, wordnet=wordnet) for r, h in zip(references, hypotheses)]
    return sum(scores) / len(scores)


def rouge(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures from `rouge-score`."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for target, prediction in zip(targets, predictions):
        for key, score in scorer.score(target, prediction).items():
            totals[key] += score.fmeasure
    return {key: value / len(targets) for key, value in totals.items()}


def mol2text_metrics(
    targets: Sequence, predictions: Sequence, *, tokenizer: str | None = None, with_meteor: bool = True
) -> dict[str, float | None]:
    """SeqIO metric function for SMILES -> caption (keys and semantics: module docstring)."""
    check_lengths(targets, predictions, "mol2text_metrics")
    if not targets:
        raise ValueError("mol2text_metrics: no examples to score")
    targets = [as_text(t) for t in targets]
    predictions = [as_text(top1(p)) for p in predictions]
    tokenize = word_tokenize if tokenizer is None else _hf_tokenize(tokenizer)
    references = [tokenize(t) for t in targets]
    hypotheses = [tokenize(p) for p in predictions]
    return {
        "bleu2": corpus_bleu(references, hypotheses, (0.5, 0.5)),
        "bleu4": corpus_bleu(references, hypotheses, (0.25, 0.25, 0.25, 0.25)),
        **rouge(targets, predictions),
        "meteor": meteor(references, hypotheses) if with_meteor else None,
    }
