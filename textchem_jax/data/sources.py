"""Readers for the dataset formats people actually have, with a per-file report of skipped rows.

Formats (see DESIGN §3 for the folder layout):
- ChEBI-20: TSV `CID<TAB>SMILES<TAB>description`, backslashes stored doubled (read back as one);
- USPTO-MIT: `reactants>>product bond-edits` lines, `.txt` or `.txt.tar.gz`;
- USPTO-50K: CSV `class,id,rxn_smiles`;
- paragraph2actions: line-aligned `src-*.txt` / `tgt-*.txt`;
- GT4SD jsonl (`{"source": prompt + input, "target": ...}`) and the user's own TSV/jsonl pairs.

A malformed row (wrong column count, empty field, bytes that are not UTF-8, unreadable SMILES or reaction)
is skipped and recorded with its line number in a `SkipReport`, or raises `DataFormatError` naming `file:line` when
`strict=True`. With `keep_unreadable=True` (what evaluation splits use) a row whose only fault is chemistry
RDKit cannot read is kept as written (atom maps stripped) and reported, so that it counts as a miss and
accuracies keep the published split's denominator. Paths may be local or any `tf.io.gfile` scheme (`gs://...`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator

from textchem_jax.chem import canonicalize_with_reason, precursors_and_products, precursors_and_products_as_written, unescape_backslashes
from textchem_jax.paths import is_remote
from textchem_jax.process_pool import start_parallel_map


class DataFormatError(ValueError):
    """A row that does not fit its format, raised in strict mode; the message starts `file:line:`."""


@dataclasses.dataclass
class FileReport:
    path: str
    rows: int = 0
    skipped: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    kept_unreadable: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    notes: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # kept rows a person should look at

    @property
    def has_issues(self) -> bool:
        return bool(self.skipped or self.kept_unreadable or self.notes)


@dataclasses.dataclass
class SkipReport:
    """Per-file counts of rows read and rows skipped (with line numbers and reasons)."""

    files: dict[str, FileReport] = dataclasses.field(default_factory=dict)

    def file(self, path: str) -> FileReport:
        return self.files.setdefault(path, FileReport(path))

    def merge(self, other: SkipReport) -> None:
        for path, report in other.files.items():
            self.files[path] = report

    @property
    def total_skipped(self) -> int:
        return sum(len(f.skipped) for f in self.files.values())

    @property
    def total_kept_unreadable(self) -> int:
        return sum(len(f.kept_unreadable) for f in self.files.values())

    def format(self, max_lines: int = 10, issues_only: bool = False) -> str:
        """Rows read and skipped per file, with up to `max_lines` line numbers and reasons of each kind."""
        lines = []
        for report in self.files.values():
            if issues_only and not report.has_issues:
                continue
            kept = f", {len(report.kept_unreadable)} unreadable kept (they count as misses)" if report.kept_unreadable else ""
            lines.append(f"{report.path}: {report.rows} rows read{kept}, {len(report.skipped)} skipped")
            hidden = 0
            skipped = {line for line, _ in report.skipped}  # a note on a skipped row (a cut last line) says so
            notes = [(line, f" ({'skipped' if line in skipped else 'kept'})", reason) for line, reason in report.notes]
            for entries in ([(line, "", reason) for line, reason in report.skipped],
                            [(line, " (kept)", reason) for line, reason in report.kept_unreadable], notes):  # fmt: skip
                lines += [f"  line {line}{label}: {reason}" for line, label, reason in entries[:max_lines]]
                hidden += max(len(entries) - max_lines, 0)
            if hidden:
                lines.append(f"  ... {hidden} more")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class MoleculeText:
    cid: str
    smiles: str
    description: str


@dataclasses.dataclass(frozen=True)
class ReactionPair:
    """A reaction in the Text+Chem T5 format: sorted canonical precursors and product(s)."""

    precursors: str
    product: str


@dataclasses.dataclass(frozen=True)
class TextPair:
    source: str
    target: str


class _Rows:
    """Collects the outcome of each row: kept, or skipped (raising instead in strict mode)."""

    def __init__(self, path: str, strict: bool, report: SkipReport | None, keep_unreadable: bool = False):
        self.path, self.strict, self.keep_unreadable = path, strict, keep_unreadable
        self.report = (report if report is not None else SkipReport()).file(path)
        self.report.rows, self.report.skipped, self.report.kept_unreadable, self.report.notes = 0, [], [], []

    def keep(self) -> None:
        self.report.rows += 1

    def skip(self, line: int, reason: str) -> None:
        if self.strict:
            raise DataFormatError(f"{self.path}:{line}: {reason} (strict mode; without it the row is skipped and counted)")
        self.report.skipped.append((line, reason))

    def unreadable(self, line: int, reason: str) -> bool:
        """A row whose chemistry RDKit cannot read: True when it is kept as written (then call `keep`)."""
        if self.keep_unreadable and not self.strict:
            self.report.kept_unreadable.append((line, reason))
            return True
        self.skip(line, reason)
        return False


def open_text(path: str, errors: str = "strict") -> io.TextIOBase:
    """Opens a local or `tf.io.gfile` path as UTF-8 text; `.tar.gz` yields its single member.

    A byte-order mark (Windows editors and Excel write one) is dropped: read as text it would make the first
    header unrecognised or become part of the first row. UTF-16 (Excel's "Unicode text") and gzip without
    `.tar.gz` are refused with a DataFormatError naming the file: read as UTF-8 they were rows of garbage.

    A `.tar.gz` that is not a readable archive raises DataFormatError naming the file. The readers pass
    `errors="surrogateescape"`, so that a line that is not UTF-8 is skipped and reported (`not_utf8`)
    instead of ending the whole file with a UnicodeDecodeError.
    """
    path = str(path)
    if is_remote(path):
        import tensorflow as tf

        try:
            with tf.io.gfile.GFile(path, "rb") as remote:
                raw = io.BytesIO(remote.read())  # GFile is not an io.RawIOBase
        except tf.errors.NotFoundError:
            raise FileNotFoundError(f"{path}: no such file") from None  # as `open` says it for a local path
    else:
        raw = open(path, "rb")  # local only: remote paths took tf.io.gfile above
    archive_name = path.lower().endswith((".tar.gz", ".tgz"))  # as `name_and_kind` reads names
    head = raw.read(2)
    raw.seek(0)
    if head in (b"\xff\xfe", b"\xfe\xff"):  # read as UTF-8, every character came with a NUL: rows of garbage
        raw.close()
        raise DataFormatError(f"{path}: UTF-16 text (it starts with the byte-order mark {head.hex(' ')}, as Excel's "
                              "'Unicode text' does); save it as UTF-8")  # fmt: skip
    if head == b"\x1f\x8b" and not archive_name:
        raw.close()
        raise DataFormatError(f"{path}: gzip-compressed; gunzip it, or pack the one file as .tar.gz")
    if archive_name:
        try:
            archive = tarfile.open(fileobj=raw, mode="r:gz")
            members = [m for m in archive.getmembers() if m.isfile()]
            if len(members) == 1:
                raw = archive.extractfile(members[0])
        except (tarfile.TarError, EOFError, OSError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
            raw.close()
            raise DataFormatError(f"{path}: not a readable .tar.gz archive ({error}); unpack it or compress it again") from None
        if len(members) != 1:
            raise DataFormatError(f"{path}: expected one file inside the archive, found {len(members)}")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors=errors, newline="")


def name_and_kind(path: str) -> tuple[str, str]:
    """`("rows", ".jsonl")` for `.../rows.jsonl`, `ROWS.JSONL`, `rows.ndjson` or `rows.jsonl.tar.gz`: the file's
    name and its format, told by the suffix inside an archive's, in lower case (`.ndjson` is `.jsonl`)."""
    base = os.path.basename(path.rstrip("/"))
    inner = base[: -len(".tar.gz")] if base.lower().endswith(".tar.gz") else base[:-4] if base.lower().endswith(".tgz") else base
    name, kind = os.path.splitext(inner)
    return name, {".ndjson": ".jsonl"}.get(kind.lower(), kind.lower())


# `surrogateescape` decodes each byte that is not UTF-8 to one of these code points (valid UTF-8 never does).
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def not_utf8(text: str) -> str | None:
    """Why a line read with `errors="surrogateescape"` is not UTF-8 text, or None when it is."""
    match = _ESCAPED_BYTE.search(text)
    if match is None:
        return None
    return f"not UTF-8 text (byte 0x{ord(match.group()) - 0xDC00:02x} at character {match.start() + 1}); save the file as UTF-8"


def exists(path: str) -> bool:
    if is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.exists(path)  # local only: remote paths took tf.io.gfile above


UNTERMINATED = "the file's last line has no line ending: if the file was cut short (a partial copy), this row is incomplete"


def _noting_an_unterminated_end(lines: Iterable[str], rows: _Rows) -> Iterator[str]:
    """`lines` as they are; a last line without a line ending is noted in `rows`. The line formats (ChEBI-20,
    USPTO, CSV) end each row with one, so a missing one is how a truncated copy shows: its last row parses."""
    number, line = 0, "\n"
    for number, line in enumerate(lines, start=1):
        yield line
    if not line.endswith(("\n", "\r")):
        rows.report.notes.append((number, UNTERMINATED))


def numbered_lines(path: str, rows: _Rows | None = None, *, note_unterminated: bool = False) -> Iterator[tuple[int, str]]:
    """(line number, line without its ending); lines that are not UTF-8 are skipped and reported to `rows`,
    or, without `rows`, handed on with their bytes escaped for the caller to check (`not_utf8`).
    `note_unterminated`: a last line without a line ending is noted in `rows` (a row format that ends each line)."""
    with open_text(path, errors="surrogateescape") as f:
        lines = _noting_an_unterminated_end(f, rows) if note_unterminated else f
        for number, line in enumerate(lines, start=1):
            reason = not_utf8(line) if rows is not None else None
            if reason is not None:
                rows.skip(number, reason)
                continue
            yield number, line.rstrip("\r\n").removeprefix("\ufeff")  # one after line 1: files joined by `cat`


# A column's name in a header line: a word or a few, not data (a ChEBI-20 row starts with its numeric CID).
_COLUMN_NAME = re.compile(r"[A-Za-z_][\w .-]{0,39}", re.ASCII)


def is_chebi20_header(line: str) -> bool:
    """Whether a first line names the three columns, however spelt (`CID<TAB>SMILES<TAB>Text`, quoted, lower case):
    each field a name, and the SMILES one no molecule. Only `CID SMILES description` was known: a file headed
    `CID SMILES Text` read 11 examples of its 10 rows, the header's target `SMILES` scored as a miss."""
    names = [field.strip().strip('"') for field in line.split("\t")]
    return (len(names) == 3 and all(_COLUMN_NAME.fullmatch(name) for name in names)
            and canonicalize_with_reason(names[1])[0] is None)  # fmt: skip


def read_chebi20(
    path: str, *, strict: bool = False, report: SkipReport | None = None, keep_unreadable: bool = False
) -> list[MoleculeText]:
    """ChEBI-20 rows; SMILES get their single backslashes back and must parse (or are kept, see above)."""
    rows = _Rows(str(path), strict, report, keep_unreadable)
    records, header = [], True  # the first line that is not blank may be the header, however it is spelt
    for number, line in numbered_lines(path, rows, note_unterminated=True):
        if not line.strip():
            continue
        if header and is_chebi20_header(line):
            header = False
            continue
        header = False
        fields = line.split("\t")
        if len(fields) != 3:
            rows.skip(number, f"expected 3 tab-separated fields, found {len(fields)}")
            continue
        cid, smiles, description = (f.strip() for f in fields)
        if not smiles or not description:
            rows.skip(number, "empty SMILES or description")
            continue
        smiles = unescape_backslashes(smiles)
        canonical, reason = canonicalize_with_reason(smiles)
        if canonical is None and not rows.unreadable(number, f"SMILES does not parse ({reason}): {smiles[:60]}"):
            continue
        rows.keep()
        records.append(MoleculeText(cid, smiles, description))
    return records


def _reaction_outcome(reaction: str) -> tuple[ReactionPair | None, str | None]:
    """`(pair, None)` in Text+Chem T5 format; `(pair as written, reason)` when RDKit cannot read a molecule;
    `(None, reason)` when it is not reaction SMILES at all (picklable for workers)."""
    try:
        return ReactionPair(*precursors_and_products(reaction)), None
    except ValueError as error:
        try:
            return ReactionPair(*precursors_and_products_as_written(reaction)), str(error)
        except ValueError:
            return None, str(error)


def _read_reactions(path: str, numbered: list[tuple[int, str]], rows: _Rows) -> list[ReactionPair]:
    outcomes = start_parallel_map(_reaction_outcome, [r for _, r in numbered])()
    records = []
    for (number, _), (pair, reason) in zip(numbered, outcomes):
        if reason is not None:
            if pair is None:
                rows.skip(number, reason)
                continue
            if not rows.unreadable(number, reason):
                continue
        rows.keep()
        records.append(pair)
    return records


def read_uspto_mit(
    path: str, *, strict: bool = False, report: SkipReport | None = None, keep_unreadable: bool = False
) -> list[ReactionPair]:
    """USPTO-MIT lines `reactants>>product bond-edits` (bond edits ignored), atom maps removed."""
    rows = _Rows(str(path), strict, report, keep_unreadable)
    numbered = []
    for number, line in numbered_lines(path, rows, note_unterminated=True):
        if not line.strip():
            continue
        reaction = line.split()[0]
        if reaction.count(">") != 2:
            rows.skip(number, "not a reaction SMILES 'reactants>reagents>products'")
            continue
        numbered.append((number, reaction))
    return _read_reactions(str(path), numbered, rows)


def read_uspto50k(
    path: str, *, strict: bool = False, report: SkipReport | None = None, keep_unreadable: bool = False
) -> list[ReactionPair]:
    """USPTO-50K CSV `class,id,rxn_smiles`, atom maps removed."""
    rows = _Rows(str(path), strict, report, keep_unreadable)
    numbered = []
    with open_text(path, errors="surrogateescape") as f:
        reader = csv.reader(_noting_an_unterminated_end(f, rows))
        try:
            header = next(reader, None)
        except csv.Error as error:
            raise DataFormatError(f"{path}:1: the header is not CSV ({error})") from None
        names = [name.strip().casefold() for name in header or []]  # however it is spelt, as ChEBI-20's header
        if "rxn_smiles" not in names:
            raise DataFormatError(f"{path}:1: expected a CSV header with a 'rxn_smiles' column, got {header}")
        column = names.index("rxn_smiles")
        while True:
            try:
                fields = next(reader, None)
            except csv.Error as error:  # e.g. a field over csv.field_size_limit(): the reader goes on after it
                rows.skip(reader.line_num, f"not CSV ({error})")
                continue
            if fields is None:
                break
            number = reader.line_num
            if len(fields) != len(header):
                rows.skip(number, f"expected {len(header)} comma-separated fields, found {len(fields)}")
            elif not fields[column].strip():
                rows.skip(number, "empty rxn_smiles")
            elif not_utf8(fields[column]):
                rows.skip(number, not_utf8(fields[column]))
            else:
                numbered.append((number, fields[column].strip()))
    return _read_reactions(str(path), numbered, rows)


def read_paragraph2actions(
    src_path: str, tgt_path: str, *, strict: bool = False, report: SkipReport | None = None
) -> list[TextPair]:
    """Line-aligned sentence -> action sequence pairs; the two files must have the same length."""
    sources = list(numbered_lines(src_path))
    targets = list(numbered_lines(tgt_path))
    if len(sources) != len(targets):
        raise DataFormatError(
            f"{src_path} has {len(sources)} lines but {tgt_path} has {len(targets)}: the files must be line-aligned"
        )
    rows = _Rows(str(tgt_path), strict, report)
    records = []
    for (number, source), (_, target) in zip(sources, targets):
        reason = not_utf8(source) or not_utf8(target)
        if reason:
            rows.skip(number, f"{src_path if not_utf8(source) else tgt_path}: {reason}")
            continue
        if not source.strip() or not target.strip():
            rows.skip(number, "empty sentence or action sequence")
            continue
        rows.keep()
        records.append(TextPair(source.strip(), target.strip()))
    return records


def read_jsonl_pairs(
    path: str,
    *,
    source_key: str = "source",
    target_key: str = "target",
    strict: bool = False,
    report: SkipReport | None = None,
) -> list[TextPair]:
    """jsonl rows with a source and a target string (the GT4SD format, or the user's own)."""
    rows = _Rows(str(path), strict, report)
    records = []
    for number, line in numbered_lines(path, rows):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            rows.skip(number, f"not JSON: {error.msg}")
            continue
        except RecursionError:  # `[[[[...`: Python's JSON decoder recurses per level
            rows.skip(number, "not JSON: nested deeper than Python's recursion limit")
            continue
        source, target = (row.get(source_key), row.get(target_key)) if isinstance(row, dict) else (None, None)
        if not isinstance(source, str) or not isinstance(target, str) or not source.strip() or not target.strip():
            rows.skip(number, f"needs non-empty string fields {source_key!r} and {target_key!r}")
            continue
        rows.keep()
        records.append(TextPair(source.strip(), target.strip()))
    return records


def read_tsv_pairs(path: str, *, strict: bool = False, report: SkipReport | None = None) -> list[TextPair]:
    """The user's own `input<TAB>target` lines (no header)."""
    rows = _Rows(str(path), strict, report)
    records = []
    for number, line in numbered_lines(path, rows):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            rows.skip(number, f"expected 2 non-empty tab-separated fields, found {len(fields)}")
            continue
        rows.keep()
        records.append(TextPair(fields[0].strip(), fields[1].strip()))
    return records
