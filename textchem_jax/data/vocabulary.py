"""SentencePiece vocabularies for Text+Chem T5: load any `spiece.model`, train a chemistry-aware one.

Why our own vocabulary: the T5/GT4SD `spiece.model` maps `\\` to `<unk>` (cis/trans stereo is lost and
had to be patched back as a string hack) and NFKC-normalizes text, so decode(encode(s)) != s for
SMILES and for text with `μ`, `°`, `−`. `train_vocabulary` fixes both (byte fallback, identity
normalization, exact whitespace) and makes SMILES tokenize on atom boundaries: frequent multi-character
atoms (`Cl`, `[C@@H]`, `[O-]`, ...) are single symbols and no piece joins part of an atom to a neighbour,
while pieces may still span whole atoms (`C(=O)O`, `c1ccccc1`), which keeps SMILES short.

Models keep the T5 ids (pad=0, eos=1, unk=2, no bos), so seqio adds the 100 `<extra_id_N>` sentinels
at the end exactly as for the T5 vocabulary.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import os
import pathlib
import posixpath
import re
import tempfile
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import sentencepiece as spm

from textchem_jax.paths import CHECKPOINTS_FOLDER, is_remote, makedirs

if TYPE_CHECKING:
    from textchem_jax.data.sources import FileReport, SkipReport

T5_EXTRA_IDS = 100
DEFAULT_VOCABULARY_PATH = pathlib.Path(__file__).parent / "vocab" / "textchem_demo.model"  # local only: packaged

spm.set_min_log_level(1)  # keep SentencePiece's INFO lines (one per model load) off the console

# Atom-level SMILES tokens (Schwaller et al. 2019, Molecular Transformer), plus `~` (fragment bond) and `<`.
SMILES_TOKEN = re.compile(
    r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|/|:|~|@|\?|>|<|\*|\$|%[0-9]{2}|[0-9])"
)
_BRACKET_ATOM = re.compile(
    r"\[\d*(?:[A-Z][a-z]?|[a-z]{1,2}|\*)(?:@@?|@(?:TH|AL|SP|TB|OH)\d+)?(?:H\d*)?(?:[+-]{1,2}\d*)?(?::\d+)?]"
)
_ATOM_MAP = re.compile(r":\d+]$")
_SMILES_ONLY = frozenset("()=#\\/@%0123456789[]")

# Always symbols: the common multi-character atoms, so even a small corpus keeps them whole.
COMMON_SMILES_SYMBOLS = (
    "Cl", "Br", "[C@@H]", "[C@H]", "[C@@]", "[C@]", "[nH]", "[O-]", "[N+]", "[n+]", "[N-]", "[NH+]",
    "[NH2+]", "[NH3+]", "[S+]", "[P+]", "[B-]", "[H]", "[2H]", "[Si]", "[Se]", "[se]", "[Na+]", "[K+]",
    "[Li+]", "[Cl-]", "[Br-]", "[I-]", "[OH-]", "[S@]", "[S@@]", "[Pd]",
)  # fmt: skip

# Training only: pieces never cross this character; it is stripped from the training text, never seen at encode.
_BOUNDARY = "\ue000"


def smiles_tokens(chunk: str) -> list[str] | None:
    """Atom-level tokens of a SMILES-like chunk; None unless the regex covers all of it with real atoms.

    The standard regex takes any `[...]` as one atom; requiring OpenSMILES bracket-atom syntax keeps
    bracketed words of chemical names (`[(2R)-2-hydroxypropyl]`) out.
    """
    tokens = SMILES_TOKEN.findall(chunk)
    if not tokens or "".join(tokens) != chunk:
        return None
    if any(t[0] == "[" and not _BRACKET_ATOM.fullmatch(t) for t in tokens):
        return None
    return tokens


def is_smiles_like(chunk: str) -> bool:
    """Covered by `smiles_tokens` and with a character English words do not have (`Cl`, `(`, `=`, `1`, ...)."""
    tokens = smiles_tokens(chunk)
    return tokens is not None and any(len(t) > 1 or t in _SMILES_ONLY for t in tokens)


def _mark_atom_boundaries(text: str) -> str:
    """Puts `_BOUNDARY` around multi-character atoms and component separators in SMILES-like chunks.

    Pieces may still join single-character atoms, bonds and ring digits (`C(=O)O`, `c1ccccc1`), which
    is what makes SMILES short; they may not split `Cl`, `[C@@H]` or `%12`, nor start inside one.
    """
    chunks = []
    for chunk in text.split(" "):
        if is_smiles_like(chunk):
            marked = (f"{_BOUNDARY}{t}{_BOUNDARY}" if len(t) > 1 or t in ".>~" else t for t in smiles_tokens(chunk))
            chunk = "".join(marked).replace(_BOUNDARY * 2, _BOUNDARY)
        chunks.append(chunk)
    return " ".join(chunks)


def frequent_smiles_symbols(texts: Iterable[str], *, min_count: int = 10, max_symbols: int = 200) -> list[str]:
    """`COMMON_SMILES_SYMBOLS` plus the multi-character atoms seen at least `min_count` times.

    Atom-mapped brackets (`[CH3:12]`) are skipped: they are training-data artefacts, not model input.
    """
    counts: collections.Counter[str] = collections.Counter()
    for text in texts:
        for chunk in text.split():
            if is_smiles_like(chunk):
                counts.update(t for t in smiles_tokens(chunk) if len(t) > 1 and not _ATOM_MAP.search(t))
    symbols = list(COMMON_SMILES_SYMBOLS)
    frequent = sorted((-n, t) for t, n in counts.items() if n >= min_count and t not in symbols)
    symbols += [t for _, t in frequent[: max(0, max_symbols - len(symbols))]]
    return symbols


def _write_bytes(path: str, data: bytes) -> None:
    """Local paths with plain I/O (no TensorFlow import); `gs://` and friends through tf.io.gfile."""
    if is_remote(path):
        import tensorflow as tf

        makedirs(os.path.dirname(path))
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(data)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:  # local only: remote paths took tf.io.gfile above
            f.write(data)


def _missing(path: str, flag: str | None = None) -> FileNotFoundError:
    """`flag`: the command's flag that gave `path`, named in the fix (a gin binding otherwise)."""
    if flag:
        return FileNotFoundError(f"no SentencePiece model at {path}: give {flag} an existing .model file, or a "
                                 f"checkpoint folder that holds {CHECKPOINT_VOCABULARY_FILE}")  # fmt: skip
    # A textchem-convert model.gin names its spiece.model by its absolute path (gin has no path relative to the
    # file): the folder moved, the path is gone.
    moved = (f" (a textchem-convert folder moved? bind --gin.VOCABULARY_PATH=\"'NEW_FOLDER/{CHECKPOINT_VOCABULARY_FILE}'\")"
             if os.path.basename(path) == CHECKPOINT_VOCABULARY_FILE else "")  # fmt: skip
    return FileNotFoundError(f"no SentencePiece model at {path}{moved}")


def _read_bytes(path: str, flag: str | None = None) -> bytes:
    if is_remote(path):
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            raise _missing(path, flag)
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    if not os.path.isfile(path):  # local only: remote paths took tf.io.gfile above
        raise _missing(path, flag)
    with open(path, "rb") as f:  # local only: remote paths took tf.io.gfile above
        return f.read()


MAX_SENTENCE_BYTES = 1 << 16  # our floor (SentencePiece's default is 4,192), raised to the longest text: it dropped longer ones


def _train(texts: Iterable[str], output_prefix: str | os.PathLike, **options) -> str:
    """Trains deterministically (sorted input, one thread, no shuffling) and writes `<prefix>.model`."""
    sentences = sorted(t for t in texts if t)
    if not sentences:
        raise ValueError("no non-empty training texts")
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=writer,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        max_sentence_length=max(MAX_SENTENCE_BYTES, *(len(s.encode()) for s in sentences)),
        minloglevel=2,
        **options,
    )
    from sentencepiece import sentencepiece_model_pb2

    model = sentencepiece_model_pb2.ModelProto.FromString(writer.getvalue())
    model.normalizer_spec.normalization_rule_tsv = ""  # the rules are compiled in; the file records no local path
    path = os.fspath(output_prefix) + ".model"
    _write_bytes(path, model.SerializeToString())
    return path


# Identity normalization as a rule set: its one rule maps the Unicode noncharacter U+10FFFF to U+FFFD (no text
# holds it). A model with no rules at all (`normalization_rule_name="identity"`) has an empty charsmap, for which
# tensorflow-text's own SentencePiece logs "precompiled_charsmap is empty" each time a tokenizer kernel starts:
# once per task and dataset, dozens of lines on every console.
_QUIET_IDENTITY_RULES = "10FFFF\tFFFD\n"


def train_vocabulary(
    texts: Iterable[str],
    output_prefix: str | os.PathLike,
    *,
    vocab_size: int = 8000,
    user_defined_symbols: Sequence[str] | None = None,
    min_symbol_count: int = 10,
    max_symbols: int = 200,
    max_piece_length: int = 16,
    hard_vocab_limit: bool = True,
    **sentencepiece_options,
) -> str:
    """Trains the chemistry-aware vocabulary on `texts`; returns the path of `<output_prefix>.model`.

    Every string round-trips exactly and never maps to `<unk>`: byte fallback (unseen characters
    become UTF-8 byte pieces), identity normalization (no NFKC: `_QUIET_IDENTITY_RULES`), whitespace as is. Digits and
    punctuation may join letters in a piece (SMILES are mostly punctuation and digits), multi-character
    atoms are symbols (`user_defined_symbols`, default: `frequent_smiles_symbols(texts)`; they are matched
    in English text too, so `Clinical` starts with the piece `Cl`). Python decode keeps leading spaces;
    tf_text's detokenize (seqio `decode_tf`) drops them. `sentencepiece_options` override any trainer
    setting (e.g. `model_type="bpe"`).
    """
    texts = list(texts)
    if user_defined_symbols is None:
        user_defined_symbols = frequent_smiles_symbols(texts, min_count=min_symbol_count, max_symbols=max_symbols)
    options = dict(
        vocab_size=vocab_size,
        byte_fallback=True,
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,  # T5 convention; decode drops exactly the one space it added
        split_digits=False,
        split_by_number=False,
        split_by_unicode_script=False,
        character_coverage=1.0,
        pretokenization_delimiter=_BOUNDARY,
        user_defined_symbols=list(user_defined_symbols),
        max_sentencepiece_length=max_piece_length,
        hard_vocab_limit=hard_vocab_limit,
    )
    with tempfile.TemporaryDirectory() as folder:  # the trainer reads its rules from a file; each call its own
        rules = os.path.join(folder, "identity_rules.tsv")  # local only: the trainer's temporary input
        with open(rules, "w", encoding="utf-8") as f:  # local only: a temporary file
            f.write(_QUIET_IDENTITY_RULES)
        options = {"normalization_rule_tsv": rules, **options, **sentencepiece_options}
        return _train((_mark_atom_boundaries(t) for t in texts), output_prefix, **options)


def train_plain_vocabulary(
    texts: Iterable[str], output_prefix: str | os.PathLike, *, vocab_size: int = 8000, hard_vocab_limit: bool = True
) -> str:
    """The baseline: SentencePiece's default unigram (NFKC, no byte fallback, no symbols).

    Only what a fair comparison needs differs from the defaults: T5 ids (same number of special pieces),
    deterministic training and every text, however long, as ours (so both see the same texts).
    """
    return _train(texts, output_prefix, vocab_size=vocab_size, hard_vocab_limit=hard_vocab_limit)


def load_vocabulary(path: str | os.PathLike, *, extra_ids: int = T5_EXTRA_IDS, flag: str | None = None):
    """Any SentencePiece model (ours, or the T5/GT4SD `spiece.model`) as a `seqio.SentencePieceVocabulary` that
    tokenizes in tf.data as sentencepiece and Hugging Face do (`spm_vocabulary`).

    Checked here so a wrong path fails now, naming the path, not later inside a tf.data pipeline; `flag`: the
    command's flag that gave it, for the fix (a gin binding otherwise).
    """
    path = os.fspath(path)
    data = _read_bytes(path, flag)
    problem = "the file is empty" if not data else None
    if data:
        try:
            if spm.SentencePieceProcessor(model_proto=data).GetPieceSize() == 0:
                problem = "it has no pieces"
        except Exception as error:  # sentencepiece raises RuntimeError (parse failure) or OSError
            problem = f"{type(error).__name__}: {error}".strip()
    if problem:
        raise ValueError(f"{path} is not a SentencePiece model ({problem})")
    from textchem_jax.data.spm_vocabulary import SentencePieceVocabulary  # seqio's, tokenizing as sentencepiece does

    return SentencePieceVocabulary(path, extra_ids=extra_ids)


def default_vocabulary(*, extra_ids: int = T5_EXTRA_IDS):
    """The vocabulary shipped with the package (`DEFAULT_VOCABULARY_PATH`)."""
    return load_vocabulary(DEFAULT_VOCABULARY_PATH, extra_ids=extra_ids)


def task_vocabulary(*, path: str | None = None, extra_ids: int = T5_EXTRA_IDS):
    """The vocabulary when no gin file binds VOCABULARY: `path` (a run's config.gin binds there the one
    TEXTCHEM_VOCABULARY named), else `TEXTCHEM_VOCABULARY` (a SentencePiece model path), else the shipped default."""
    path = path or os.environ.get("TEXTCHEM_VOCABULARY")
    return load_vocabulary(path, extra_ids=extra_ids) if path else default_vocabulary(extra_ids=extra_ids)


CHECKPOINT_VOCABULARY_FILE = "spiece.model"  # what textchem-convert copies into its output, as HF does


def _vocabulary_places(checkpoint: str | os.PathLike) -> list[str]:
    """Where a checkpoint folder's `spiece.model` may be, in order: in the folder (a textchem-convert import, a
    Hugging Face directory, a run's MODEL_DIR), in the run's MODEL_DIR when the folder is its `checkpoints/` or one
    step in that, or in a T5X MODEL_DIR's latest `checkpoint_<step>/` (the step T5X restores from it)."""
    import tensorflow as tf  # local or gs://

    folder = os.fspath(checkpoint).rstrip("/")
    parent, name = posixpath.split(folder)
    if name.isdigit() and posixpath.basename(parent) == CHECKPOINTS_FOLDER:  # MODEL_DIR/checkpoints/<step>
        parent, name = posixpath.split(parent)
    folders = [folder] + ([parent] if name == CHECKPOINTS_FOLDER else [])
    names = tf.io.gfile.listdir(folder) if tf.io.gfile.isdir(folder) else []
    steps = sorted((int(m.group(1)), m.group(0))
                   for name in names if (m := re.fullmatch(r"checkpoint_(\d+)", name.rstrip("/"))))  # fmt: skip
    folders += [f"{folder}/{name}" for _, name in steps[-1:]]
    return [f"{f}/{CHECKPOINT_VOCABULARY_FILE}" for f in folders]


def own_vocabulary_file(checkpoint: str | os.PathLike) -> str | None:
    """The `spiece.model` a checkpoint folder brings (`_vocabulary_places`), or None."""
    import tensorflow as tf

    return next((path for path in _vocabulary_places(checkpoint) if tf.io.gfile.exists(path)), None)


def checkpoint_vocabulary(checkpoint: str, *, extra_ids: int = T5_EXTRA_IDS, flag: str | None = None):
    """The SentencePiece model a checkpoint folder brings (`own_vocabulary_file`): fine-tuning from a
    `textchem-convert` import, a run or a T5X run keeps the vocabulary its embedding was trained with. `flag`: the
    command's flag that gave the folder, for the fix (a gin binding otherwise)."""
    path = own_vocabulary_file(checkpoint)
    if path is None:
        raise FileNotFoundError(
            f"{checkpoint} brings no vocabulary (looked for {' and '.join(_vocabulary_places(checkpoint))}): name the "
            f"folder or checkpoint_<step> folder that holds {CHECKPOINT_VOCABULARY_FILE} (textchem-convert and "
            f"textchem-train write one), or {f'give {flag} a .model file' if flag else 'bind VOCABULARY yourself'}"
        )
    return load_vocabulary(path, extra_ids=extra_ids)


def same_vocabulary_files(first: str, second: str) -> bool:
    """Whether two SentencePiece model files are one vocabulary (the same bytes; local or gs://)."""
    return first == second or _read_bytes(first) == _read_bytes(second)


# Characters SMILES and our reaction format need that T5's SentencePiece model cannot write (GT4SD maps
# `\\` to <unk>, losing cis/trans stereo): `\\` bond direction, `~` fragment bond, `{}` and `<` of CXSMILES.
CHEMISTRY_CHARACTERS = ("\\", "~", "{", "}", "<")


def extend_vocabulary(path: str | os.PathLike, output_path: str | os.PathLike,
                      characters: Sequence[str] = CHEMISTRY_CHARACTERS) -> tuple[str, int, list[str]]:  # fmt: skip
    """Writes `path` plus a piece for each of `characters` it cannot encode; returns (output, the number of
    pieces before, the characters added).

    Added pieces are user-defined symbols appended after the existing ones, so every old piece keeps
    its id (T5's sentinels, counted after the pieces, move up by len(added): see
    `models.t5.insert_vocabulary_rows`, which grows the embedding to match).
    """
    from sentencepiece import sentencepiece_model_pb2

    data = _read_bytes(os.fspath(path))
    processor = spm.SentencePieceProcessor(model_proto=data)
    added = [c for c in characters if processor.unk_id() in processor.EncodeAsIds(f"C{c}C")]
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(data)
    for character in added:
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = character, 0.0, sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED
    _write_bytes(os.fspath(output_path), proto.SerializeToString())
    return os.fspath(output_path), processor.GetPieceSize(), added


def padded_vocab_size(vocabulary, multiple: int = 128) -> int:
    """Embedding rows for `vocabulary`: its size padded to a multiple of 128, like T5's 32,100 -> 32,128."""
    return -(-vocabulary.vocab_size // multiple) * multiple


def fits_embedding(vocabulary, rows: int) -> bool:
    """Whether an embedding of `rows` rows serves `vocabulary`: from one row per id (a Hugging Face model resized
    with `resize_token_embeddings(len(tokenizer))`: 32,100) to that padded to 128 (T5's and ours: 32,128)."""
    return vocabulary.vocab_size <= rows <= padded_vocab_size(vocabulary)


def fitting_rows(vocabulary) -> str:
    """The embedding sizes that serve `vocabulary`, for messages: `32,100 to 32,128 embedding rows`."""
    low, high = vocabulary.vocab_size, padded_vocab_size(vocabulary)
    return f"{high:,} embedding rows" if low == high else f"{low:,} to {high:,} embedding rows"


def vocabulary_file(vocabulary) -> str:
    """Where a vocabulary comes from, for messages ("?" when it has no file)."""
    return str(getattr(vocabulary, "sentencepiece_model_file", None) or "?")


def _processor(vocabulary) -> spm.SentencePieceProcessor:
    if isinstance(vocabulary, spm.SentencePieceProcessor):
        return vocabulary
    if isinstance(vocabulary, (str, os.PathLike)):
        return spm.SentencePieceProcessor(model_proto=_read_bytes(os.fspath(vocabulary)))
    return vocabulary.tokenizer  # seqio.SentencePieceVocabulary


def encode_as_tasks(vocabulary, texts: Sequence[str]) -> list:
    """Each text's ids (an int32 array, no EOS) as SeqIO's tokenize preprocessor makes them for training and
    evaluation: `vocabulary.encode_tf`, on the whole batch (a user's vocabulary may tokenize otherwise in TensorFlow
    than in Python: seqio's own SentencePiece vocabulary does, on 6% of ChEBI-20's texts; see spm_vocabulary)."""
    import numpy as np
    import seqio
    import tensorflow as tf

    if not isinstance(vocabulary, seqio.SentencePieceVocabulary):  # seqio's encode_tf takes one string
        return [np.asarray(vocabulary.encode_tf(tf.constant(text, tf.string)), np.int32) for text in texts]
    if not texts:
        return []
    ids = vocabulary.encode_tf(tf.constant(list(texts), tf.string))  # a RaggedTensor, one row per text
    return np.split(np.asarray(ids.flat_values, np.int32), np.cumsum(ids.row_lengths().numpy())[:-1])


def tokens_per_string(vocabulary, strings: Sequence[str]) -> float:
    """Mean number of ids per string (no EOS). `vocabulary`: seqio vocabulary, processor or model path."""
    if not strings:
        raise ValueError("no strings to count tokens of")
    encoded = _processor(vocabulary).encode(list(strings))
    return sum(map(len, encoded)) / len(encoded)


@dataclasses.dataclass(frozen=True)
class RoundTrip:
    """What `check_round_trip` found: counts and a few failing strings."""

    checked: int
    mismatched: list[str]
    with_unk: list[str]

    @property
    def ok(self) -> bool:
        return not self.mismatched and not self.with_unk


def check_round_trip(vocabulary, strings: Iterable[str]) -> RoundTrip:
    """decode(encode(s)) == s and no `<unk>` id, for every string."""
    processor = _processor(vocabulary)
    strings = list(strings)
    unk = processor.unk_id()
    mismatched, with_unk = [], []
    for text, ids in zip(strings, processor.encode(strings)):
        if unk in ids:
            with_unk.append(text)
        if processor.decode(ids) != text:
            mismatched.append(text)
    return RoundTrip(len(strings), mismatched, with_unk)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Mean tokens per SMILES of ours against plain SentencePiece of the same size on the same texts."""

    ours: float
    plain: float
    ours_path: str
    plain_path: str


def compare_with_plain(
    texts: Sequence[str], smiles: Sequence[str], output_dir: str | os.PathLike, *, vocab_size: int, **options
) -> Comparison:
    """Trains both vocabularies on `texts` and counts tokens per SMILES in `smiles` (held out, ideally)."""
    texts = list(texts)
    ours = train_vocabulary(texts, os.path.join(output_dir, "ours"), vocab_size=vocab_size, **options)
    plain = train_plain_vocabulary(texts, os.path.join(output_dir, "plain"), vocab_size=vocab_size)
    return Comparison(tokens_per_string(ours, smiles), tokens_per_string(plain, smiles), ours, plain)


def read_texts(path: str | os.PathLike, *, report: SkipReport | None = None) -> list[str]:
    """Training texts from a file (local or gs://, a `.tar.gz` of one), blank ones left out: `.jsonl` (the strings
    of `JSONL_TEXT_KEYS`), a ChEBI-20 `.txt` (first line its header: its SMILES and descriptions, read as the data
    readers read it; the CID is no text), `.tsv` or `.csv` (all fields; header row; a `SMILES`
    column has ChEBI-20's doubled backslashes undone) or anything else as one text per line.

    A row that gives no text it holds (a `.jsonl` line that is no object, a field that is no string, a `.tsv`/`.csv`
    row whose field count is not the header's) is skipped and recorded in `report` with its line, as the data
    readers do. A line that is not UTF-8, or not JSON in a `.jsonl`, raises naming `file:line`."""
    from textchem_jax.data import sources

    path = str(path)
    kind = sources.name_and_kind(path)[1]
    with sources.open_text(path, errors="surrogateescape") as f:
        lines = list(f)
    for number, line in enumerate(lines, start=1):
        if sources.not_utf8(line):
            raise ValueError(f"{path}:{number}: {sources.not_utf8(line)}")
    report = report if report is not None else sources.SkipReport()
    rows = report.file(path)
    if kind == ".txt" and sources.is_chebi20_header(next((line.rstrip("\r\n") for line in lines if line.strip()), "")):
        # ChEBI-20's own files, read as the data readers read them; the CID is no text
        records = sources.read_chebi20(path, report=report, keep_unreadable=True)
        return [text for record in records for text in (record.smiles, record.description)]
    if kind == ".jsonl":  # textchem-infer's rows (input, target), SeqIO's (inputs, targets), ours (source, target)
        return _jsonl_texts(path, lines, rows)
    if kind in (".tsv", ".csv"):
        return _table_texts(lines, kind, rows)
    texts = [line.rstrip("\r\n") for line in lines if line.strip()]
    rows.rows = len(texts)
    return texts


def _jsonl_texts(path: str, lines: list[str], rows: FileReport) -> list[str]:
    """The `JSONL_TEXT_KEYS` strings of each row; a row without one is skipped, a field that is no string noted."""
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(row, dict):
            rows.skipped.append((number, f"not a JSON object with text fields: {line.strip()[:60]}"))
            continue
        fields = {key: row[key] for key in JSONL_TEXT_KEYS if key in row}
        wrong = ", ".join(f"{key!r} ({type(value).__name__})" for key, value in fields.items() if not isinstance(value, str))
        got = [value for value in fields.values() if isinstance(value, str) and value.strip()]
        if not got:
            reason = f"not strings: {wrong}" if wrong else f"no non-empty string among {', '.join(JSONL_TEXT_KEYS)}"
            rows.skipped.append((number, reason))
            continue
        if wrong:
            rows.notes.append((number, f"not strings, left out: {wrong}"))
        rows.rows += 1
        texts += got
    return texts


def _table_texts(lines: list[str], kind: str, rows: FileReport) -> list[str]:
    """Every non-blank field of a `.tsv`/`.csv` with a header row; a row of another field count is skipped."""
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE) if kind == ".tsv" else csv.reader(lines)
    header = next(reader, [])
    texts = []
    for fields in reader:
        if not fields:  # a blank line
            continue
        if len(fields) != len(header):
            rows.skipped.append((reader.line_num, f"expected {len(header)} fields (the header's), found {len(fields)}"))
            continue
        rows.rows += 1
        texts += [value.replace("\\\\", "\\") if key == "SMILES" else value for key, value in zip(header, fields)
                  if value.strip()]  # fmt: skip
    return texts


JSONL_TEXT_KEYS = ("source", "input", "inputs", "target", "targets")  # a .jsonl row's texts a vocabulary reads


def smiles_in_texts(texts: Iterable[str]) -> list[str]:
    """The SMILES-like chunks of `texts` that have an atom (for tokens-per-SMILES summaries: `52.63`, `(10`
    and `95:5` in prose are not SMILES), atom-mapped ones left out."""
    return [
        chunk
        for text in texts
        for chunk in text.split()
        if is_smiles_like(chunk)
        and any(t[0].isalpha() or t[0] == "[" for t in smiles_tokens(chunk))
        and not any(_ATOM_MAP.search(t) for t in smiles_tokens(chunk))
    ]
