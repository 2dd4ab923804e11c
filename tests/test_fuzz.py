"""Fuzzed input, no crash: hypothesis-generated malformed input for every file reader, the chemistry parsers,
the postprocessors and metric functions, the gin entry points and `textchem-convert`, each against its contract.

- readers: rows come out, or bad rows are skipped and reported with `file:line` (strict mode raises at the
  first of them), or a DataFormatError/FileNotFoundError names the file; never UnicodeDecodeError, csv.Error,
  EOFError, IndexError or a TensorFlow error;
- chemistry: never raises; unreadable input gives None (or the ValueError/TypeError a docstring promises);
- metrics: finite values in their range, NaN/None only where the module says n/a, a ValueError for
  mismatched lengths or no examples;
- gin: a clear error on stderr and a non-zero exit, no traceback; convert: a pickle is refused unrun.

Each target counts the inputs it tried in `TRIED`; `test_zz_fuzz_counts`, last in the file, checks that every
target that ran tried some and prints the counts (`pytest -s`). All tests share one xdist worker for that.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import functools
import io
import json
import math
import os
import pickle
import re
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from textchem_jax import catalogue, chem
from textchem_jax.chem import notations
from textchem_jax.chem.smiles import MAX_SMILES_LENGTH
from textchem_jax.data import datasets, sources
from textchem_jax.metrics import (
    action_grammar,
    forward_metrics,
    gt4sd_smiles_postprocessor,
    mol2text_metrics,
    paragraph2actions_metrics,
    retro_metrics,
    retro_postprocessor,
    smiles_postprocessor,
    text2mol_metrics,
    text_postprocessor,
)
from textchem_jax.metrics.wordnet import load_wordnet

pytestmark = pytest.mark.xdist_group("fuzz")  # one worker runs them all, so the counts meet in one TRIED

TRIED: collections.Counter = collections.Counter()  # target -> inputs tried in this session
TARGETS: dict[str, str] = {}  # test function -> its target
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fuzz(examples: int):
    """Reproducible settings (same inputs every run), sized so the whole file runs in about a minute."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip


def target(name: str):
    """Names the fuzz target of a test, so that `test_zz_fuzz_counts` expects inputs for it."""

    def register(test):
        TARGETS[test.__name__] = name
        return test

    return register


def tried() -> None:
    """Counts one input of the running test's target."""
    test = re.match(r"\w+", os.environ["PYTEST_CURRENT_TEST"].split("::")[-1]).group()  # test_x[id]@group (call)
    TRIED[TARGETS[test]] += 1


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder for generated files, and a private parsed-file cache (`datasets.read_dataset`)."""
    path = tmp_path_factory.mktemp("fuzz")
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(path / "cache")
    yield path
    if saved is None:
        os.environ.pop("XDG_CACHE_HOME")
    else:
        os.environ["XDG_CACHE_HOME"] = saved


def fresh(workdir) -> str:
    return tempfile.mkdtemp(dir=workdir)


# ----------------------------------------------------------------------------------------------------------
# Strategies

SMILES_ALPHABET = "CNOSPFIBrclnosp()[]=#$@+-\\/%0123456789.~:*H"
VALID_SMILES = ["CCO", "c1ccccc1", "CC(=O)O", "[Na+]~[OH-]", "C/C=C\\C", "[CH3:1][OH:2]", "N#N", "C[C@H](N)C(=O)O", "O"]
smiles_like = st.text(alphabet=SMILES_ALPHABET, max_size=30)
smiles = st.one_of(st.sampled_from(VALID_SMILES), smiles_like)
# Any text (hypothesis leaves out lone surrogates), text made of raw bytes, and what decoders emit.
any_text = st.one_of(st.text(max_size=30), st.binary(max_size=20).map(lambda b: b.decode("latin-1")))
special = st.sampled_from(["", " ", "\x00", "\ufeff", "\u2047", "<unk>", "</s>", "<pad>", "\\\\", "\t", "\r\n"])
huge = st.builds(lambda unit, n: (unit * n)[: 60_000], st.text(alphabet=SMILES_ALPHABET, min_size=1, max_size=6),
                 st.integers(1_000, 20_000))  # fmt: skip
string_input = st.one_of(smiles, any_text, special, huge)

field_bytes = st.one_of(
    st.sampled_from(VALID_SMILES).map(str.encode),
    smiles_like.map(str.encode),
    st.text(max_size=20).map(str.encode),
    st.binary(max_size=12),  # mostly not UTF-8
    st.sampled_from([b"", b"\x00", b"\xff\xfe", b"\xef\xbb\xbf", b'"', b'"a,b', b"\\\\", b" ", b">>"]),
)
# Long lines (one line in six): just over MAX_SMILES_LENGTH, a chain RDKit's writer would crash on, and over
# csv's 131,072-character field limit.
long_line = st.sampled_from([MAX_SMILES_LENGTH + 1, 30_000, 140_000]).map(lambda n: b"C" * n)
line_ending = st.sampled_from([b"\n", b"\r\n", b"\r"])


def lines_of(row: st.SearchStrategy[bytes], separator: bytes) -> st.SearchStrategy[list[bytes]]:
    junk = st.lists(field_bytes, max_size=5).map(separator.join)
    line = st.one_of(row, row, junk, st.binary(max_size=40), st.just(b""), long_line if separator else junk)
    return st.lists(line, max_size=10)


def file_bytes(header: bytes | None, row: st.SearchStrategy[bytes], separator: bytes) -> st.SearchStrategy[bytes]:
    """Optional header (right, garbled or missing), rows and junk, mixed line endings, maybe no final one."""
    headers = st.sampled_from([b""] if header is None else [header, b"", header.upper(), b"\xef\xbb\xbf" + header])
    endings = st.lists(line_ending, min_size=12, max_size=12)

    def build(head, lines, ends, final):
        parts = ([head] if head else []) + lines
        text = b"".join(part + ends[i % len(ends)] for i, part in enumerate(parts))
        return text if final or not text else text[: -len(ends[(len(parts) - 1) % len(ends)])]

    return st.builds(build, headers, lines_of(row, separator), endings, st.booleans())


chebi_row = st.builds(lambda cid, s, d: b"\t".join([cid, s.replace("\\", "\\\\").encode(), d]),
                      st.integers(0, 10**6).map(lambda i: str(i).encode()), smiles,
                      st.sampled_from([b"The molecule is ethanol.", b"", b"\xff", b"caf\xc3\xa9"]))  # fmt: skip
reaction = st.builds(lambda a, b, c: f"{a}>{b}>{c}", smiles, st.one_of(st.just(""), smiles), smiles)
mit_row = st.builds(lambda r, edits: (r + edits).encode(), reaction, st.sampled_from(["", " 1-2-1.0", " |f:0.1|", "\t"]))
uspto50k_row = st.builds(lambda c, r: b",".join([str(c).encode(), b"US123", r.encode()]), st.integers(0, 11), reaction)
text_row = st.one_of(st.sampled_from([b"STIR for 2 h.", b"Add water.", b"ADD water; STIR.", b" "]), st.text(max_size=30).map(str.encode))


def _json_value():
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


jsonl_row = st.one_of(
    st.builds(lambda s, t: json.dumps({"source": s, "target": t}).encode(), st.one_of(st.text(max_size=20), _json_value()),
              st.one_of(st.text(max_size=20), _json_value())),  # fmt: skip
    _json_value().map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"[" * 100_000, b"{" * 50, b'{"source": "a", "target": "b"', b"NaN", b'"\\ud800"']),
)
tsv_row = st.builds(lambda a, b: a + b"\t" + b, text_row, text_row)


# ----------------------------------------------------------------------------------------------------------
# File readers

ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _line_count(data: bytes) -> int:
    """Lines as the readers number them (universal newlines, like `open(..., newline="")` iteration)."""
    return sum(1 for _ in io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape", newline=""))


def _check_text(*values: str) -> None:
    for value in values:
        assert isinstance(value, str) and value and value == value.strip() and not ESCAPED_BYTE.search(value), value


def check_reader(read, path: str, lines: int, check_record, *, keep_unreadable: bool | None = None,
                 files: tuple[str, ...] = ()) -> list:  # fmt: skip
    """Runs `read`, then in strict mode, and checks the reader contract (module docstring); returns the records.
    `files`: every file `read` reads, when more than `path` (the one its report is about)."""
    extra = {} if keep_unreadable is None else {"keep_unreadable": keep_unreadable}
    report = sources.SkipReport()
    try:
        records = read(report=report, **extra)
    except sources.DataFormatError as error:  # a file-level problem, named with the file
        assert any(name in str(error) for name in files or (path,)), error
        event("file refused")
        return []
    file_report = report.files[path]
    assert file_report.rows == len(records)
    for number, reason in file_report.skipped + file_report.kept_unreadable:
        assert 1 <= number <= max(lines, 1) and isinstance(reason, str) and reason
    assert f"{path}: {len(records)} rows read" in report.format()
    for record in records:
        check_record(record)
    event(f"rows {'read' if records else 'none'}, {'some' if file_report.skipped else 'none'} skipped")
    if keep_unreadable:
        return records
    try:
        strict = read(strict=True, report=sources.SkipReport())
    except sources.DataFormatError as error:
        assert file_report.skipped, f"strict mode raised on a file that skips nothing: {error}"
        assert str(error).startswith(f"{path}:{file_report.skipped[0][0]}: "), (error, file_report.skipped[0])
    else:
        assert not file_report.skipped and strict == records
    return records


def _write(workdir, name: str, data: bytes) -> str:
    path = os.path.join(fresh(workdir), name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _check_molecule_text(keep_unreadable: bool):
    def check(record: sources.MoleculeText) -> None:
        _check_text(record.smiles, record.description)
        assert keep_unreadable or chem.canonicalize(record.smiles) is not None

    return check


def _check_reaction(record: sources.ReactionPair) -> None:
    _check_text(record.precursors, record.product)
    assert ">" not in record.precursors + record.product


def _check_pair(record: sources.TextPair) -> None:
    _check_text(record.source, record.target)


@target("sources.read_chebi20")
@fuzz(120)
@given(data=file_bytes(b"CID\tSMILES\tdescription", chebi_row, b"\t"), keep_unreadable=st.booleans())
def test_chebi20_reader(workdir, data, keep_unreadable):
    tried()
    path = _write(workdir, "test.txt", data)
    read = functools.partial(sources.read_chebi20, path)
    check_reader(read, path, _line_count(data), _check_molecule_text(keep_unreadable), keep_unreadable=keep_unreadable)


@target("sources.read_uspto_mit (.txt)")
@fuzz(100)
@given(data=file_bytes(None, mit_row, b" "), keep_unreadable=st.booleans())
def test_uspto_mit_reader(workdir, data, keep_unreadable):
    tried()
    path = _write(workdir, "test.txt", data)
    read = functools.partial(sources.read_uspto_mit, path)
    check_reader(read, path, _line_count(data), _check_reaction, keep_unreadable=keep_unreadable)


def _tar_gz(data: bytes, damage: str, where: float) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        names = {"none": [], "one": ["test.txt"], "two": ["test.txt", "more.txt"]}.get(damage, ["test.txt"])
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if damage == "none":
            folder = tarfile.TarInfo("folder")
            folder.type = tarfile.DIRTYPE  # a member that is not a file
            archive.addfile(folder)
    packed = buffer.getvalue()
    cut = int(where * len(packed))
    if damage == "truncated":
        return packed[:cut]
    if damage == "flipped":
        return packed[:cut] + bytes([packed[cut] ^ 0xFF]) + packed[cut + 1 :] if cut < len(packed) else packed
    if damage == "plain":
        return data
    return packed


@target("sources.read_uspto_mit (.tar.gz)")
@fuzz(60)
@given(data=file_bytes(None, mit_row, b" "), damage=st.sampled_from(["one", "two", "none", "truncated", "flipped", "plain"]),
       where=st.floats(0, 1))  # fmt: skip
def test_uspto_mit_tar_gz_reader(workdir, data, damage, where):
    tried()
    path = _write(workdir, "test.txt.tar.gz", _tar_gz(data, damage, where))
    read = functools.partial(sources.read_uspto_mit, path)
    # A damaged archive may still read (a flipped byte of the gzip header), as other lines: no bound on them.
    records = check_reader(read, path, _line_count(data) if damage == "one" else 10**9, _check_reaction)
    if damage == "one":  # an intact archive reads like its member
        assert records == sources.read_uspto_mit(_write(workdir, "test.txt", data))


@target("sources.read_uspto50k")
@fuzz(100)
@given(data=file_bytes(b"class,id,rxn_smiles", uspto50k_row, b","), keep_unreadable=st.booleans())
def test_uspto50k_reader(workdir, data, keep_unreadable):
    tried()
    path = _write(workdir, "test.csv", data)
    read = functools.partial(sources.read_uspto50k, path)
    check_reader(read, path, _line_count(data), _check_reaction, keep_unreadable=keep_unreadable)


@target("sources.read_paragraph2actions")
@fuzz(80)
@given(source=file_bytes(None, text_row, b" "), target=file_bytes(None, text_row, b" "), aligned=st.booleans())
def test_paragraph2actions_reader(workdir, source, target, aligned):
    tried()
    if aligned:  # cut both to the same number of lines, so that rows come out
        keep = min(len(source.splitlines(True)), len(target.splitlines(True)))
        source, target = b"".join(source.splitlines(True)[:keep]), b"".join(target.splitlines(True)[:keep])
    folder = fresh(workdir)
    src, tgt = os.path.join(folder, "src-test.txt"), os.path.join(folder, "tgt-test.txt")
    for path, data in ((src, source), (tgt, target)):
        with open(path, "wb") as f:
            f.write(data)
    read = functools.partial(sources.read_paragraph2actions, src, tgt)
    check_reader(read, tgt, max(_line_count(source), _line_count(target)), _check_pair, files=(src, tgt))
    if _line_count(source) != _line_count(target):  # (unless a file is refused whole: UTF-16, gzip)
        with pytest.raises(sources.DataFormatError, match=f"{re.escape(src)} has .* lines but {re.escape(tgt)}|"
                                                          "UTF-16 text|gzip-compressed"):  # fmt: skip
            read()


@target("sources.read_jsonl_pairs")
@fuzz(100)
@given(data=file_bytes(None, jsonl_row, b""))
def test_jsonl_reader(workdir, data):
    tried()
    path = _write(workdir, "test.jsonl", data)
    check_reader(functools.partial(sources.read_jsonl_pairs, path), path, _line_count(data), _check_pair)


@target("sources.read_tsv_pairs")
@fuzz(60)
@given(data=file_bytes(None, tsv_row, b"\t"))
def test_tsv_reader(workdir, data):
    tried()
    path = _write(workdir, "pairs.tsv", data)
    check_reader(functools.partial(sources.read_tsv_pairs, path), path, _line_count(data), _check_pair)


_text_or_json = st.one_of(st.text(max_size=20), st.sampled_from(VALID_SMILES), _json_value())
prediction_row = st.one_of(
    st.builds(lambda t, p: json.dumps({"task": "textchem_forward", "target": t, "prediction": p}).encode(), _text_or_json,
              st.one_of(_text_or_json, st.lists(st.sampled_from(VALID_SMILES), max_size=3))),  # fmt: skip
    st.builds(lambda i, t, p: json.dumps({"inputs": {"inputs_pretokenized": i, "targets_pretokenized": t}, "prediction": p}).encode(),
              _text_or_json, _text_or_json, _text_or_json),  # fmt: skip
    st.builds(lambda i, t, b: json.dumps({"task": "textchem_retro", "input": i, "target": t, "beams": b,
                                          "prediction": b[0] if isinstance(b, list) and b else b}).encode(),
              _text_or_json, _text_or_json, st.one_of(st.lists(st.sampled_from(VALID_SMILES), max_size=3), _json_value())),  # fmt: skip
    jsonl_row,
)


@target("score.read_predictions + score (textchem-score)")
@fuzz(80)
@given(data=file_bytes(None, prediction_row, b""),
       name=st.sampled_from(["p.jsonl", "textchem_demo_retro-predict.jsonl-00000-of-00001", "textchem_forward-000004.jsonl"]))  # fmt: skip
def test_prediction_reader_and_scoring(workdir, data, name):
    """Rows are scored with every metric present (a number, or None/NaN for n/a), or a ValueError names file:line."""
    from textchem_jax import score

    tried()
    path = _write(workdir, name, data)
    try:
        results = score.score(path)
    except ValueError as error:
        if str(error) == f"{path} holds no predictions (empty)":  # blank lines only: said, not an empty table
            assert not data.decode("utf-8", "replace").removeprefix("\ufeff").strip(), error
            event("empty file refused")
            return
        match = re.match(rf"{re.escape(path)}:(\d+): ", str(error))
        assert match and 1 <= int(match.group(1)) <= _line_count(data), error
        event("file refused")
        return
    for task, metrics in results.items():
        assert catalogue.task_of(task) in ("forward", "retro") and metrics, results
        assert all(value is None or isinstance(value, float) for value in metrics.values()), metrics
    event(f"{len(results)} task(s) scored")


infer_input_row = st.one_of(text_row, st.builds(lambda i, t: json.dumps({"input": i, "target": t}).encode(), _text_or_json,
                                                  st.one_of(st.none(), _text_or_json)), jsonl_row)  # fmt: skip


@target("infer._file_examples (textchem-infer input_file)")
@fuzz(60)
@given(data=file_bytes(None, infer_input_row, b""), name=st.sampled_from(["inputs.txt", "inputs.jsonl"]))
def test_infer_input_file_reader(workdir, data, name):
    """Each non-blank line is one example: its prompted text without line ends or escaped bytes, at most 16
    tokens ending in EOS; or a ValueError names file:line."""
    from textchem_jax.data.vocabulary import default_vocabulary
    from textchem_jax.infer import _file_examples

    tried()
    path = _write(workdir, name, data)
    try:
        examples = list(_file_examples(path, "forward", default_vocabulary(), 16))
    except ValueError as error:
        if str(error).startswith(f"{path} has no inputs"):  # nothing but blank lines: no example, said so
            assert not data.decode("utf-8", "replace").removeprefix("\ufeff").strip(), error
            event("empty file refused")
            return
        match = re.match(rf"{re.escape(path)}:(\d+): ", str(error))
        assert match and 1 <= int(match.group(1)) <= _line_count(data), error
        event("file refused")
        return
    for example in examples:
        assert not re.search("[\r\n\udc80-\udcff]", example["inputs_pretokenized"]), example
        assert 1 <= len(example["inputs"]) <= 16 and example["inputs"][-1] == 1
        assert isinstance(example.get("targets_pretokenized", ""), str)
    event(f"{'some' if examples else 'no'} examples")


@target("tfds_builders.build (manual folder)")
@fuzz(8)
@given(data=file_bytes(b"CID\tSMILES\tdescription", chebi_row, b"\t"), name=st.sampled_from(["chebi20/test.txt", "chebi20/test.csv"]))
def test_tfds_manual_folder(workdir, data, name):
    """`tfds build` of a manual folder: the reader's records, or a clear error; never one from TensorFlow."""
    from textchem_jax.data import tfds_builders

    tried()
    folder = fresh(workdir)
    os.makedirs(os.path.join(folder, "manual", "chebi20"))
    with open(os.path.join(folder, "manual", name), "wb") as f:
        f.write(data)
    manual, tfds_dir = os.path.join(folder, "manual"), os.path.join(folder, "tfds")
    try:
        tfds_builders.build("chebi20", manual, tfds_dir)
    except FileNotFoundError as error:
        assert name != "chebi20/test.txt" and "chebi20/test.txt" in str(error)
        event("split file missing")
        return
    except sources.DataFormatError as error:
        assert os.path.join(manual, "chebi20", "test.txt") in str(error)
        assert datasets.read_dataset("chebi20", "test", manual) == []
        event("no readable rows")
        return
    assert tfds_builders.read_tfds("chebi20", "test", tfds_dir) == datasets.read_dataset("chebi20", "test", manual) != []
    event("built")


@target("datasets.split_slice")
@fuzz(150)
@given(split=st.one_of(st.text(max_size=20), st.builds("train[:{}%]".format, st.one_of(st.floats(), st.integers(), st.text(max_size=6)))))
def test_split_slice(split):
    tried()
    try:
        selection = datasets.split_slice(split)
    except ValueError as error:
        assert split in str(error)
        return
    kept = range(10)[selection.rows(10)]
    assert isinstance(selection.name, str) and len(kept) <= 10
    if selection.start is None and (selection.stop or "").endswith("%") and not selection.stop.startswith("-"):
        assert kept  # a data fraction, `train[:P%]`, keeps at least one row


# ----------------------------------------------------------------------------------------------------------
# Chemistry


@target("chem: parse_smiles, canonicalize*, molecule_key, inchi*")
@fuzz(300)
@given(value=st.one_of(string_input, st.binary(max_size=20), st.none(), st.integers(), st.lists(smiles, max_size=2)))
def test_smiles_parsers_and_canonicalizers(value):
    tried()
    parsed = chem.parse_smiles(value)
    assert parsed.ok == (parsed.reason is None) and (parsed.ok or isinstance(parsed.reason, str))
    canonical, reason = chem.canonicalize_with_reason(value)
    assert canonical == chem.canonicalize(value)
    assert (canonical is None) != (reason is None) and (canonical is None or isinstance(canonical, str))
    components = chem.canonical_components(value)
    assert (components is None) == (canonical is None)
    key = chem.molecule_key(value)
    assert key is None or isinstance(key, str)
    for function in (chem.inchi, chem.inchikey):
        result = function(value)
        assert result is None or isinstance(result, str)
    longest = max(re.split(r"[.~]", chem.unescape_backslashes(value.strip())), key=len) if isinstance(value, str) else ""
    if len(longest) > MAX_SMILES_LENGTH:  # a fragment RDKit would crash on, refused unread
        assert canonical is None and "longer than" in chem.parse_smiles(longest).reason
    if canonical is not None:
        assert chem.canonicalize(canonical) is not None  # canonical output reads back
        assert isinstance(chem.randomize_smiles(value if isinstance(value, str) else value.decode(), 7), str)


@target("chem: long chains")
@pytest.mark.parametrize("length", [MAX_SMILES_LENGTH, MAX_SMILES_LENGTH + 1, 30_000])
def test_long_chains_do_not_crash_rdkit(length):
    """A 20,000-atom chain overflows RDKit's recursive SMILES writer (the process dies): such strings are refused."""
    tried()
    canonical = chem.canonicalize("C" * length)
    assert (canonical == "C" * length) if length <= MAX_SMILES_LENGTH else canonical is None
    assert text2mol_metrics(["C" * length], ["C" * length])["validity"] == (1.0 if length <= MAX_SMILES_LENGTH else 0.0)


reaction_suffix = st.one_of(special, st.just(" |f:0.1,2|"), st.text(alphabet="f:0123456789.,| ", max_size=12))


@target("chem: parse_reaction, precursors_and_products*, remove_atom_maps")
@fuzz(200)
@given(value=st.one_of(reaction, st.builds(lambda r, x: r + x, reaction, reaction_suffix), st.text(max_size=30), st.none(), huge))
def test_reaction_parsers(value):
    tried()
    for function in (chem.parse_reaction, chem.precursors_and_products, chem.precursors_and_products_as_written):
        try:
            result = function(value)
        except ValueError as error:
            assert str(error)
        else:
            assert result is not None
    if isinstance(value, str):
        for function in (chem.remove_atom_maps, lambda v: chem.precursors_string(v.split("."))):
            try:
                assert isinstance(function(value), str)
            except ValueError as error:
                assert str(error)


@target("chem.notations: rewrite_variant, same_molecule")
@fuzz(150)
@given(value=string_input, variant=st.one_of(st.sampled_from([*notations.variant_names(2), "random", "bogus"]), st.text(max_size=8)))
def test_notations(value, variant):
    tried()
    try:
        rewritten = notations.rewrite_variant(value, variant)
    except ValueError as error:
        assert str(error)
        assert datasets.rewrite_or_keep(value, variant) == value  # what evaluation does with such an input
    else:
        assert isinstance(rewritten, str) and notations.same_molecule(rewritten, value) in (True, False)
    assert notations.same_molecule(value, value) == (chem.canonicalize(value) is not None)


# ----------------------------------------------------------------------------------------------------------
# Postprocessors and metrics

decoded = st.one_of(string_input, st.binary(max_size=20), st.none(),
                    st.lists(st.one_of(smiles, any_text, special), max_size=3).map(" ".join))  # fmt: skip
prediction = st.one_of(decoded, st.lists(decoded, max_size=4))  # a list: beams, best first (maybe none)


@target("metrics postprocessors")
@fuzz(300)
@given(output=prediction, product=st.one_of(st.none(), decoded), is_target=st.booleans())
def test_postprocessors(output, product, is_target):
    tried()
    example = None if product is None else {"product": product}
    for postprocess in (smiles_postprocessor, gt4sd_smiles_postprocessor, text_postprocessor, retro_postprocessor):
        result = postprocess(output, example=example, is_target=is_target)
        beams = result if isinstance(output, list) else [result]
        assert isinstance(beams, list) and len(beams) == (len(output) if isinstance(output, list) else 1)
        for beam in beams:
            if isinstance(beam, dict):
                assert postprocess is retro_postprocessor and is_target and example is not None
                beam = beam["target"] + beam["product"]
            assert isinstance(beam, str) and beam == beam.strip()
            if postprocess is text_postprocessor:
                assert " ".join(beam.split()) == beam
            else:
                assert not any(c.isspace() for c in beam)


action_details = st.one_of(st.sampled_from(["with water 3 x", "for 2 h at rt under N2", "organic", "keep filtrate", ""]),
                           st.text(max_size=15))  # fmt: skip
action = st.builds(lambda name, rest: f"{name} {rest}".strip(), st.sampled_from([*sorted(action_grammar.ACTIONS), "add", ""]), action_details)
action_sequence = st.lists(action, max_size=4).map(lambda actions: "; ".join(actions) + ".")
long_actions = st.integers(1, 3000).map(lambda n: "ADD " + "a at b under " * n + ".")


@target("metrics.action_grammar.parse_actions")
@fuzz(300)
@given(text=st.one_of(st.text(max_size=40), action_sequence, long_actions))
def test_action_grammar(text):
    tried()
    try:
        actions = action_grammar.parse_actions(text)
    except action_grammar.ActionSyntaxError as error:
        assert str(error) and action_grammar.is_valid_action_sequence(text) is False
    else:
        assert actions and all(a.name in action_grammar.ACTIONS for a in actions)
        assert action_grammar.is_valid_action_sequence(text) is True


def check_metrics(results: dict, keys: set, *, nan_ok=(), none_ok=(), unbounded=()) -> None:
    assert keys <= set(results), (keys, results)
    for name, value in results.items():
        if value is None:
            assert name in none_ok, name
            continue
        assert isinstance(value, float), (name, value)
        if math.isnan(value):
            assert name in nan_ok, name
            continue
        assert math.isfinite(value) and value >= 0 and (name in unbounded or value <= 1 + 1e-9), (name, value)


@st.composite
def pairs_of(draw, targets, predictions):
    """(targets, predictions) of one length (none: a ValueError), in about one case in three of different lengths."""
    n = draw(st.integers(0, 5))
    m = max(n + draw(st.sampled_from([0, 0, 0, 0, 1, -1])), 0)
    return draw(st.lists(targets, min_size=n, max_size=n)), draw(st.lists(predictions, min_size=m, max_size=m))


def expect_metric_errors(metric, targets, predictions, **kwargs) -> dict | None:
    """The metric's results; or, for mismatched lengths or no examples, the ValueError that says so."""
    if len(targets) != len(predictions) or not targets:
        message = "targets but" if len(targets) != len(predictions) else "no examples"
        with pytest.raises(ValueError, match=message):
            metric(targets, predictions, **kwargs)
        return None
    return metric(targets, predictions, **kwargs)


target_text = st.one_of(smiles, any_text, special, st.none(), st.binary(max_size=10))


@target("metrics.text2mol_metrics")
@fuzz(60)
@given(pair=pairs_of(target_text, prediction))
def test_text2mol_metrics(pair):
    tried()
    results = expect_metric_errors(text2mol_metrics, *pair)
    if results is not None:
        keys = {"bleu", "exact_match", "levenshtein", "validity", "maccs_fts", "rdk_fts", "morgan_fts"}
        check_metrics(results, keys, nan_ok={"maccs_fts", "rdk_fts", "morgan_fts"}, unbounded={"levenshtein"})


@target("metrics.mol2text_metrics")
@fuzz(40)
@given(pair=pairs_of(target_text, prediction), with_meteor=st.booleans())
def test_mol2text_metrics(pair, with_meteor):
    tried()
    results = expect_metric_errors(mol2text_metrics, *pair, with_meteor=with_meteor)
    if results is not None:
        check_metrics(results, {"bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor"}, none_ok={"meteor"})
        assert (results["meteor"] is None) == (not with_meteor or load_wordnet() is None)  # None: not asked, or no WordNet


@target("metrics.paragraph2actions_metrics")
@fuzz(60)
@given(pair=pairs_of(target_text, prediction))
def test_paragraph2actions_metrics(pair):
    tried()
    results = expect_metric_errors(paragraph2actions_metrics, *pair)
    if results is not None:
        keys = {"bleu2", "modified_bleu", "levenshtein_similarity", "exact_match", "partial_accuracy_90", "partial_accuracy_75", "validity"}
        check_metrics(results, keys)


@target("metrics.forward_metrics")
@fuzz(80)
@given(pair=pairs_of(target_text, prediction))
def test_forward_metrics(pair):
    tried()
    results = expect_metric_errors(forward_metrics, *pair)
    if results is not None:
        check_metrics(results, {"accuracy", "invalid_rate"})
        beams = max(len(p) if isinstance(p, list) else 1 for p in pair[1])
        assert ("accuracy_top2" in results) == (beams > 1)


@target("metrics.retro_metrics")
@fuzz(80)
@given(pair=pairs_of(st.one_of(target_text, st.fixed_dictionaries({"target": target_text}, optional={"product": target_text})), prediction),
       forward=st.sampled_from(["none", "echo", "short"]), outputs=st.lists(prediction, min_size=5, max_size=5))  # fmt: skip
def test_retro_metrics(pair, forward, outputs):
    tried()
    targets, predictions = pair
    if targets and any(isinstance(t, dict) for t in targets):  # targets come all as strings or all as mappings
        targets = [t if isinstance(t, dict) else {"target": t, "product": t} for t in targets]
    forward_fn = {"none": None, "echo": lambda inputs: [outputs[i % 5] for i in range(len(inputs))],
                  "short": lambda inputs: outputs[: max(len(inputs) - 1, 0)]}[forward]  # fmt: skip
    products = None if targets and isinstance(targets[0], dict) else list(targets)
    kwargs = {"forward_fn": forward_fn, "products": products}
    try:
        results = expect_metric_errors(retro_metrics, targets, predictions, **kwargs)
    except ValueError as error:  # round trip: one output per input
        assert forward == "short" and "forward_fn returned" in str(error), error
        return
    if results is not None:
        check_metrics(results, {"accuracy", "invalid_rate"} | ({"roundtrip_accuracy"} if forward_fn else set()))


# ----------------------------------------------------------------------------------------------------------
# Gin entry points

gin_literal = st.one_of(st.integers(-3, 8), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6),
                        st.booleans(), st.none(), st.lists(st.integers(0, 3), max_size=2)).map(repr)  # fmt: skip


@target("launch.parse_gin (bindings)")
@fuzz(60)
@given(value=st.one_of(gin_literal, st.text(alphabet="()[]{}'\"%@=,.:/ abc12\n\\", max_size=12)),
       selector=st.one_of(st.just("NUM_PARTITIONS"), st.just("partitioning.make_mesh.num_partitions"),
                          st.from_regex(r"[a-z_]{1,8}(\.[a-z_]{1,8}){0,2}", fullmatch=True)))  # fmt: skip
def test_gin_bindings(workdir, value, selector):
    """`parse_gin` (what textchem-train/eval/infer run first) accepts a binding or raises ConfigError."""
    import gin

    from textchem_jax import launch

    tried()
    config = os.path.join(workdir, "mesh.gin")
    with open(config, "w") as f:
        f.write("from __gin__ import dynamic_registration\nfrom textchem_jax import partitioning\n"
                "NUM_PARTITIONS = 1\npartitioning.make_mesh.num_partitions = %NUM_PARTITIONS\n")  # fmt: skip
    gin.clear_config()
    try:
        launch.parse_gin([config], [f"{selector} = {value}"])
    except launch.ConfigError as error:
        message = str(error)
        assert message
    else:
        message = None
    finally:
        gin.clear_config()
    try:
        literal = ast.literal_eval(value)  # the generated literals are Python literals too
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return
    if selector in ("NUM_PARTITIONS", "partitioning.make_mesh.num_partitions"):
        wrong_type = not (literal is None or (isinstance(literal, int) and not isinstance(literal, bool)))
        assert (message is not None and "num_partitions takes int | None" in message) == wrong_type, message
    elif "." in selector:  # an unknown configurable (or one of gin's own: gin.macro, gin.constant)
        assert message is not None or selector.startswith("gin.")


def _run_cli(module: str, *args: str, cwd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


EVAL_ARGS = ("--gin_file=models/t5_tiny.gin", "--gin_file=runs/eval.gin", "--gin.CHECKPOINT_PATH='/nonexistent'",
             "--gin.EVAL_OUTPUT_DIR='/nonexistent'", "--gin.MIXTURE_OR_TASK_NAME='textchem_demo'",
             "--gin.TASK_FEATURE_LENGTHS={'inputs': 8, 'targets': 8}")  # fmt: skip


@target("textchem-train/eval/infer (subprocess)")
@pytest.mark.parametrize(
    "module, args, message",
    [
        ("textchem_jax.train", ("--gin_file=experiments/quickstart.gin", "--gin.MODEL_DIR='{tmp}/run'", "--gin.NUM_PARTITIONS='two'"),
         "num_partitions takes int | None, but is bound to 'two'"),
        ("textchem_jax.evaluate", (*EVAL_ARGS, "--gin.no_such_configurable.value=1"), "'no_such_configurable' was not provided by an import statement"),
        ("textchem_jax.infer", ("--gin_file=runs/infer.gin", "--no_such_flag=1"), "Unknown command line flag 'no_such_flag'"),
    ],
    ids=["train-binding-of-wrong-type", "eval-unknown-configurable", "infer-unknown-flag"],
)  # fmt: skip
def test_entry_points_explain_bad_flags_without_traceback(tmp_path, module, args, message):
    tried()
    result = _run_cli(module, *(a.replace("{tmp}", str(tmp_path)) for a in args), cwd=str(tmp_path))
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "run").exists()  # nothing ran


# ----------------------------------------------------------------------------------------------------------
# textchem-convert


def _tiny_hf(folder: str):
    from textchem_jax.models import hf_convert
    from textchem_jax.models.config import t5_config

    config = t5_config("tiny", "1.1", vocab_size=32)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf_convert.hf_config_from(config), f)
    return config, hf_convert.expected_shapes(config)


def _convert(hf_dir: str, output_dir: str) -> tuple[int, str]:
    from textchem_jax import convert

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = convert.main(["--hf_dir", hf_dir, "--output_dir", output_dir])
    return code, stderr.getvalue()


@target("textchem-convert (safetensors tensors)")
@fuzz(25)
@given(data=st.data())
def test_convert_safetensors_with_wrong_tensors(workdir, data):
    from safetensors.numpy import save

    tried()
    folder = fresh(workdir)
    _, shapes = _tiny_hf(os.path.join(folder, "hf"))
    names = sorted(shapes)
    dropped = data.draw(st.sets(st.sampled_from(names), max_size=2))
    reshaped = data.draw(st.dictionaries(st.sampled_from(names), st.lists(st.integers(0, 40), max_size=3).map(tuple), max_size=2))
    extra = data.draw(st.sets(st.sampled_from(["extra.weight", "encoder.block.9.layer.0.SelfAttention.q.weight"]), max_size=1))
    dtype = data.draw(st.sampled_from([np.float32, np.float16, np.int32, np.bool_]))
    state = {n: np.zeros(reshaped.get(n, s), dtype) for n, s in shapes.items() if n not in dropped}
    state.update({n: np.ones((2,), dtype) for n in extra})
    with open(os.path.join(folder, "hf", "model.safetensors"), "wb") as f:
        f.write(save(state))
    code, stderr = _convert(os.path.join(folder, "hf"), os.path.join(folder, "out"))
    broken = (dropped - {"lm_head.weight"}) or extra or any(tuple(s) != shapes[n] for n, s in reshaped.items() if n not in dropped)
    if broken:
        assert code == 2 and re.search(r"textchem-convert: .*(missing|shapes)", stderr), stderr
    else:
        assert code == 0 and os.path.exists(os.path.join(folder, "out", "params.npz")), stderr


class _Payload:
    """Pickles as a call that creates `marker`: unpickling it runs code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@target("textchem-convert (pickles, junk)")
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@fuzz(40)
@given(kind=st.sampled_from(["pickle", "torch_payload", "torch_tensors", "random", "pickle_junk"]),
       protocol=st.integers(0, pickle.HIGHEST_PROTOCOL),
       name=st.sampled_from(["model.safetensors", "pytorch_model.bin"]), junk=st.binary(max_size=64))  # fmt: skip
def test_convert_refuses_pickles(workdir, kind, protocol, name, junk):
    import torch

    tried()
    folder = fresh(workdir)
    _, shapes = _tiny_hf(os.path.join(folder, "hf"))
    marker = os.path.join(folder, "MARKER")
    weights = os.path.join(folder, "hf", name)
    if kind == "pickle":
        with open(weights, "wb") as f:
            f.write(pickle.dumps({"shared.weight": _Payload(marker)}, protocol=protocol))
    elif kind == "torch_payload":
        torch.save({"shared.weight": _Payload(marker), **{n: torch.zeros(s) for n, s in shapes.items() if n != "shared.weight"}}, weights)
    elif kind == "torch_tensors":
        torch.save({n: torch.zeros(s) for n, s in shapes.items()}, weights)
    else:  # junk, or junk after a pickle's protocol header (the weights-only unpickler then raises anything)
        with open(weights, "wb") as f:
            f.write((b"\x80" + bytes([protocol]) if kind == "pickle_junk" else b"") + junk)
    code, stderr = _convert(os.path.join(folder, "hf"), os.path.join(folder, "out"))
    assert not os.path.exists(marker), "unpickling ran code"
    if kind == "torch_tensors" and name == "pytorch_model.bin":  # plain tensors: read with weights_only
        assert code == 0, stderr
    else:
        assert code == 2 and weights in stderr and re.search("not a safetensors file|refused|not a state dict", stderr), stderr


def test_a_torch_bin_without_torch_asks_for_the_hf_extra(tmp_path, monkeypatch):
    """A plain install (no [hf] extra) reading GT4SD's pytorch_model.bin ended in a ModuleNotFoundError traceback."""
    import torch

    _, shapes = _tiny_hf(str(tmp_path / "hf"))
    torch.save({n: torch.zeros(s) for n, s in shapes.items()}, tmp_path / "hf" / "pytorch_model.bin")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails, as where it is not installed
    code, stderr = _convert(str(tmp_path / "hf"), str(tmp_path / "out"))
    assert code == 2 and "pytorch_model.bin: reading a PyTorch .bin needs torch: pip install 'textchem_jax[hf]'" in stderr, stderr
    assert "Traceback" not in stderr


config_value = st.one_of(st.integers(-3, 40), st.floats(), st.text(max_size=6), st.none(), st.booleans(), st.lists(st.integers(), max_size=2))
INT_FIELDS = ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_layers", "relative_attention_num_buckets")


@target("textchem-convert (config.json)")
@fuzz(40)
@given(data=st.data())
def test_convert_config_json(workdir, data):
    from safetensors.numpy import save

    from textchem_jax.models import hf_convert

    tried()
    folder = fresh(workdir)
    config, shapes = _tiny_hf(os.path.join(folder, "hf"))
    with open(os.path.join(folder, "hf", "model.safetensors"), "wb") as f:
        f.write(save({n: np.zeros(s, np.float32) for n, s in shapes.items()}))
    hf_config = hf_convert.hf_config_from(config)
    changed = data.draw(st.dictionaries(st.sampled_from(sorted(hf_config)), config_value, max_size=3))
    removed = data.draw(st.sets(st.sampled_from(sorted(hf_config)), max_size=2))
    hf_config = {k: v for k, v in {**hf_config, **changed}.items() if k not in removed}
    text = data.draw(st.one_of(st.just(json.dumps(hf_config)), _json_value().map(json.dumps), st.text(max_size=20)))
    with open(os.path.join(folder, "hf", "config.json"), "w") as f:
        f.write(text)
    code, stderr = _convert(os.path.join(folder, "hf"), os.path.join(folder, "out"))
    assert code in (0, 2) and (code == 0 or "config.json" in stderr or "HF tensor" in stderr), stderr
    if code == 0:
        loaded = json.loads(text)
        for name in INT_FIELDS:
            assert name not in loaded or (type(loaded[name]) is int and loaded[name] > 0), (name, loaded[name])


# ----------------------------------------------------------------------------------------------------------


def test_zz_fuzz_counts(request):
    """Every fuzz target collected in this session tried inputs; the counts (`pytest -s` shows them)."""
    collected = {item.originalname for item in request.session.items if item.module is sys.modules[__name__]}
    expected = sorted({name for test, name in TARGETS.items() if test in collected})
    if not expected:
        pytest.skip("run with the fuzz tests of this file")
    width = max(map(len, expected))
    print("\nfuzz inputs tried:\n" + "\n".join(f"  {name:<{width}}  {TRIED[name]:>5}" for name in expected))
    assert all(TRIED[name] > 0 for name in expected), {name: TRIED[name] for name in expected}
