"""Readers of the real dataset formats: real files in ../shared/data and generated files with bad rows."""

from __future__ import annotations

import itertools
import json
import tarfile

import pytest

from textchem_jax.chem import canonicalize
from textchem_jax.data import datasets, sources

KNOWN_BAD_USPTO_MIT_TEST_LINES = [689, 1552, 2273, 17526, 24647, 25945]


def _line_count(path) -> int:
    """Non-empty lines of a (possibly .tar.gz) file, header included."""
    with sources.open_text(str(path)) as f:
        return sum(1 for line in f if line.strip())


@pytest.mark.needs_data
@pytest.mark.parametrize(
    "dataset, split, file, header, unreadable",
    [
        ("chebi20", "test", "chebi20/test.txt", 1, 0),
        ("chebi20", "validation", "chebi20/validation.txt", 1, 0),
        ("uspto50k", "test", "uspto50k/test.csv", 1, 0),
        ("uspto50k", "validation", "uspto50k/valid.csv", 1, 0),
        # two reactions with a pentavalent carbon: kept, they count as misses
        pytest.param("uspto_mit", "validation", "uspto_mit/valid.txt.tar.gz", 0, 2, marks=pytest.mark.slow),
        ("paragraph2actions", "train", "paragraph2actions/tgt-train.txt", 0, 0),
        ("paragraph2actions", "validation", "paragraph2actions/tgt-valid.txt", 0, 0),
        ("paragraph2actions", "test", "paragraph2actions/tgt-test.txt", 0, 0),
        ("gt4sd", "train", "gt4sd_sample/train.jsonl", 0, 0),
    ],
)
def test_evaluation_denominators_equal_the_files_row_counts(data, dataset, split, file, header, unreadable):
    report = sources.SkipReport()
    records = datasets.read_dataset(dataset, split, str(data), report=report)
    assert len(records) == _line_count(data / file) - header
    assert report.total_skipped == 0 and report.total_kept_unreadable == unreadable, report.format()
    assert sum(f.rows for f in report.files.values()) == len(records)


@pytest.mark.slow
@pytest.mark.needs_data
def test_uspto_mit_test_keeps_its_unreadable_rows_as_counted_misses(data, tmp_path):
    report = sources.SkipReport()
    records = datasets.read_dataset("uspto_mit", "test", str(data), report=report)
    assert len(records) == 40000 == _line_count(data / "uspto_mit" / "test.txt.tar.gz")
    (file_report,) = report.files.values()
    assert file_report.skipped == []
    assert [line for line, _ in file_report.kept_unreadable] == KNOWN_BAD_USPTO_MIT_TEST_LINES
    assert all("valence" in reason for _, reason in file_report.kept_unreadable)
    assert "line 689 (kept)" in report.format() and "6 unreadable kept" in report.format()
    # Text+Chem T5 format: no atom maps, sorted precursors, also for the rows kept as written
    kept = [records[line - 1] for line in KNOWN_BAD_USPTO_MIT_TEST_LINES]
    assert all(":" not in r.precursors and r.precursors.split(".") == sorted(r.precursors.split(".")) for r in records[:500] + kept)
    # the forward task scores all 40,000 (its metrics divide by the published split's size)
    pairs = datasets.task_pairs("forward", "test", str(data))
    assert len(pairs) == 40000 and pairs[688] == (kept[0].precursors, kept[0].product)

    # How a training split reads it: the unreadable rows skipped. On the first 1,600 lines (two of the six),
    # a plain-text copy: parsing all 40,000 again took about 60 s of this test's 65 s.
    with sources.open_text(str(data / "uspto_mit" / "test.txt.tar.gz")) as f:  # the archive's one member
        head = list(itertools.islice(f, 1600))
    (tmp_path / "head.txt").write_text("".join(head))
    training_report = sources.SkipReport()
    training = sources.read_uspto_mit(str(tmp_path / "head.txt"), report=training_report)
    (head_report,) = training_report.files.values()
    assert len(training) == 1600 - 2 and [line for line, _ in head_report.skipped] == KNOWN_BAD_USPTO_MIT_TEST_LINES[:2]
    assert [r.product for r in training[:700]] == [r.product for r in records[:701] if r not in kept]


@pytest.mark.needs_data
def test_chebi_backslashes_are_single_after_reading(data):
    records = sources.read_chebi20(str(data / "chebi20" / "test.txt"))
    with_stereo_bonds = [r for r in records if "\\" in r.smiles]
    assert len(with_stereo_bonds) == 484  # SOURCES.md: 484 test rows store doubled backslashes
    assert not any("\\\\" in r.smiles for r in records)


def test_planted_bad_rows_are_skipped_and_counted(tmp_path):
    chebi = tmp_path / "chebi.txt"
    chebi.write_text(
        "CID\tSMILES\tdescription\n"
        "1\tCCO\tThe molecule is ethanol.\n"
        "2\tC1CC\tBroken ring.\n"  # unreadable SMILES
        "3\tCCN\n"  # two columns
        "4\t\tNo SMILES.\n"  # empty field
        "5\tC/C=C\\\\C\tThe molecule is cis-2-butene.\n"
    )
    report = sources.SkipReport()
    records = sources.read_chebi20(str(chebi), report=report)
    assert [r.cid for r in records] == ["1", "5"] and records[1].smiles == "C/C=C\\C"
    assert [line for line, _ in report.files[str(chebi)].skipped] == [3, 4, 5]
    evaluation = sources.read_chebi20(str(chebi), report=report, keep_unreadable=True)
    assert [r.cid for r in evaluation] == ["1", "2", "5"] and evaluation[1].smiles == "C1CC"
    assert [line for line, _ in report.files[str(chebi)].skipped] == [4, 5]
    assert [line for line, _ in report.files[str(chebi)].kept_unreadable] == [3]
    with pytest.raises(sources.DataFormatError, match=rf"{chebi}:3: SMILES does not parse"):
        sources.read_chebi20(str(chebi), strict=True)

    mit = tmp_path / "mit.txt"
    mit.write_text("CC(=O)O.OCC>>CCOC(C)=O 1-2\nnot a reaction\nC1CC>>CC\n[CH3:1][OH:2]>>[CH3:1][O-:2]\n")
    archive = tmp_path / "mit.txt.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(mit, arcname="mit.txt")
    for path in (mit, archive):
        report = sources.SkipReport()
        records = sources.read_uspto_mit(str(path), report=report)
        assert records == [sources.ReactionPair("CC(=O)O.CCO", "CCOC(C)=O"), sources.ReactionPair("CO", "C[O-]")]
        assert [line for line, _ in report.files[str(path)].skipped] == [2, 3]
        kept = sources.read_uspto_mit(str(path), report=report, keep_unreadable=True)
        assert kept[1] == sources.ReactionPair("C1CC", "CC")  # as written: a miss, not a smaller denominator
        assert [line for line, _ in report.files[str(path)].skipped] == [2]

    csv_file = tmp_path / "u50k.csv"
    csv_file.write_text("class,id,rxn_smiles\n1,a,CCO>>CC=O\n2,b\n3,c,C(((>>C\n")
    report = sources.SkipReport()
    assert len(sources.read_uspto50k(str(csv_file), report=report)) == 1
    assert [line for line, _ in report.files[str(csv_file)].skipped] == [3, 4]

    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(json.dumps({"source": "a", "target": "b"}) + "\n{broken\n" + json.dumps({"source": "", "target": "x"}) + "\n")
    report = sources.SkipReport()
    assert sources.read_jsonl_pairs(str(jsonl), report=report) == [sources.TextPair("a", "b")]
    assert [line for line, _ in report.files[str(jsonl)].skipped] == [2, 3]

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("in\tout\nonly one field\n\n")
    report = sources.SkipReport()
    assert sources.read_tsv_pairs(str(tsv), report=report) == [sources.TextPair("in", "out")]
    assert report.total_skipped == 1


def test_a_file_cut_short_has_its_last_row_noted(tmp_path):
    """A partial copy of a line format ends inside a row, which may still parse: the row is kept, and noted."""
    whole = "CID\tSMILES\tdescription\n1\tCCO\tThe molecule is ethanol.\n2\tCCN\tThe molecule is ethylamine.\n"
    for name, text in (("whole.txt", whole), ("cut.txt", whole[:-12])):
        (tmp_path / name).write_text(text)
    report = sources.SkipReport()
    assert len(sources.read_chebi20(str(tmp_path / "whole.txt"), report=report)) == 2
    assert len(sources.read_chebi20(str(tmp_path / "cut.txt"), report=report)) == 2
    assert report.files[str(tmp_path / "whole.txt")].notes == []
    assert report.files[str(tmp_path / "cut.txt")].notes == [(3, sources.UNTERMINATED)]
    assert f"{tmp_path / 'cut.txt'}: 2 rows read, 0 skipped\n  line 3 (kept): the file's last line" in report.format(issues_only=True)
    assert str(tmp_path / "whole.txt") not in report.format(issues_only=True)
    (tmp_path / "cut.csv").write_text("class,id,rxn_smiles\n1,a,CCO>>CC=O\n2,b,CC(=O)O.OCC>>CCOC")
    report = sources.SkipReport()
    assert len(sources.read_uspto50k(str(tmp_path / "cut.csv"), report=report)) == 2
    assert report.files[str(tmp_path / "cut.csv")].notes == [(3, sources.UNTERMINATED)]
    (tmp_path / "cut_inside.txt").write_text(whole[: whole.index("2\tCCN") + 5])  # its last row lost a column
    report = sources.SkipReport()
    assert len(sources.read_chebi20(str(tmp_path / "cut_inside.txt"), report=report)) == 1
    shown = report.format()
    assert "  line 3 (skipped): the file's last line" in shown and "(kept)" not in shown  # it said skipped, then kept


def test_misaligned_paragraph2actions_files_are_an_error(tmp_path):
    (tmp_path / "src.txt").write_text("a\nb\n")
    (tmp_path / "tgt.txt").write_text("STIR.\n")
    with pytest.raises(sources.DataFormatError, match="line-aligned"):
        sources.read_paragraph2actions(str(tmp_path / "src.txt"), str(tmp_path / "tgt.txt"))


@pytest.mark.needs_data
def test_missing_split_names_expected_path_and_origin(data):
    with pytest.raises(FileNotFoundError, match=r"chebi20/train\.txt.*blender-nlp/MolT5"):
        datasets.read_dataset("chebi20", "train", str(data))
    with pytest.raises(FileNotFoundError, match=r"uspto_mit/train\.txt or .*train\.txt\.tar\.gz"):
        datasets.dataset_files("uspto_mit", "train", str(data))


def test_no_data_dir_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TEXTCHEM_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="TEXTCHEM_DATA_DIR"):
        datasets.data_dir()


def test_gfile_paths_are_read_through_tensorflow():
    import tensorflow as tf

    path = "ram://textchem/chebi.txt"
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("CID\tSMILES\tdescription\n7\tc1ccccc1\tThe molecule is benzene.\n")
    assert sources.exists(path)
    (record,) = sources.read_chebi20(path)
    assert canonicalize(record.smiles) == "c1ccccc1"
    with pytest.raises(FileNotFoundError, match="ram://textchem/missing.txt: no such file"):  # not TF's NotFoundError
        sources.read_chebi20("ram://textchem/missing.txt")


def test_a_byte_order_mark_is_not_part_of_the_header(tmp_path):
    """Saved by a Windows editor or Excel: the header is still recognised (the BOM made it a row, skipped as
    unreadable) and a CSV's first column keeps its name."""
    chebi = tmp_path / "chebi.txt"
    chebi.write_bytes(b"\xef\xbb\xbfCID\tSMILES\tdescription\r\n7\tc1ccccc1\tThe molecule is benzene.\r\n")
    report = sources.SkipReport()
    (record,) = sources.read_chebi20(str(chebi), report=report)
    assert (record.cid, record.smiles, record.description) == ("7", "c1ccccc1", "The molecule is benzene.")
    assert report.total_skipped == 0
    uspto = tmp_path / "uspto50k.csv"
    uspto.write_bytes(b"\xef\xbb\xbfrxn_smiles,class\nCC(=O)O.OCC>>CCOC(C)=O,1\n")
    (reaction,) = sources.read_uspto50k(str(uspto), strict=True)
    assert (reaction.precursors, reaction.product) == ("CC(=O)O.CCO", "CCOC(C)=O")


@pytest.mark.parametrize("header", ["\nCID\tSMILES\tdescription", "CID\tSMILES\tdescription ", "cid\tsmiles\tdescription",
                                    '"CID"\t"SMILES"\t"description"'])  # fmt: skip
def test_a_chebi20_header_however_spelt_is_not_an_example(tmp_path, header):
    """A blank line before the header, a trailing space, lower case or quotes made the header an example (3,301
    rows of the 3,300-row test split, its target `SMILES`)."""
    chebi = tmp_path / "chebi.txt"
    chebi.write_text(f"{header}\n7\tc1ccccc1\tThe molecule is benzene.\n")
    report = sources.SkipReport()
    (record,) = sources.read_chebi20(str(chebi), report=report, keep_unreadable=True)
    assert record.smiles == "c1ccccc1" and report.total_skipped == 0 and not report.files[str(chebi)].kept_unreadable


def test_utf16_and_unnamed_gzip_data_files_are_one_error_not_rows_of_garbage(tmp_path):
    """Excel's 'Unicode text' (UTF-16) was read as UTF-8: 3,300 ChEBI-20 rows kept as unreadable, a NUL between
    each character, scored 0 with exit status 0. A gzip file not named .tar.gz was called 'not UTF-8'.
    A byte-order mark after line 1 (two files joined by `cat`) is dropped as the first one is."""
    import gzip

    rows = "CID\tSMILES\tdescription\r\n7\tc1ccccc1\tThe molecule is benzene.\r\n"
    (tmp_path / "utf16.txt").write_bytes(rows.encode("utf-16"))
    with pytest.raises(sources.DataFormatError, match=r"utf16.txt: UTF-16 text \(it starts with the byte-order mark ff fe"):
        sources.read_chebi20(str(tmp_path / "utf16.txt"), keep_unreadable=True)
    (tmp_path / "packed.txt").write_bytes(gzip.compress(rows.encode()))
    with pytest.raises(sources.DataFormatError, match=r"packed.txt: gzip-compressed; gunzip it, or pack the one file as .tar.gz"):
        sources.read_chebi20(str(tmp_path / "packed.txt"))
    (tmp_path / "joined.txt").write_bytes(b"\xef\xbb\xbf" + rows.encode() + b"\xef\xbb\xbf8\tCCO\tThe molecule is ethanol.\r\n")
    assert [r.cid for r in sources.read_chebi20(str(tmp_path / "joined.txt"), strict=True)] == ["7", "8"]


@pytest.mark.needs_data
def test_task_pairs_and_prompts(data):
    pairs = datasets.task_pairs("text2mol", "test", str(data))
    assert len(pairs) == 3300 and pairs[0][0].startswith("The molecule is")
    retro = datasets.task_pairs("retro", "test", str(data))
    assert len(retro) == 5007 and "." in retro[0][1]
    gt4sd = datasets.gt4sd_pairs("forward", "train", str(data))
    assert len(gt4sd) == 2 and not gt4sd[0][0].startswith("Predict")
    augmented = datasets.augment_smiles(retro[:5], 0, 3, seed=1)
    assert len(augmented) == 20
    assert {canonicalize(p[0]) for p in augmented[:4]} == {canonicalize(retro[0][0])}
    assert augmented == datasets.augment_smiles(retro[:5], 0, 3, seed=1)


@pytest.mark.parametrize("header", ["CID\tSMILES\tText", "ID\tsmi\tcaption", '"cid"\t"canonical_smiles"\t"text"',
                                    "CID\tSMILES string\tdescription"])  # fmt: skip
def test_a_chebi20_header_with_other_column_names_is_not_an_example_and_a_first_row_stays_one(tmp_path, header):
    """A header spelt `CID<TAB>SMILES<TAB>Text` was read as a row: 11 examples of a 10-row file, its target `SMILES`
    scored as a miss. A first data row whose SMILES RDKit cannot read is still a row (kept, or skipped in training)."""
    chebi = tmp_path / "chebi.txt"
    chebi.write_text(f"{header}\n7\tc1ccccc1\tThe molecule is benzene.\n8\tCCO\tThe molecule is ethanol.\n")
    report = sources.SkipReport()
    records = sources.read_chebi20(str(chebi), report=report, keep_unreadable=True)
    assert [r.cid for r in records] == ["7", "8"] and report.total_skipped == report.total_kept_unreadable == 0
    assert [r.cid for r in sources.read_chebi20(str(chebi), strict=True)] == ["7", "8"]
    chebi.write_text("7\tC1CC\tThe molecule is a broken ring.\n8\tCCO\tThe molecule is ethanol.\n")
    report = sources.SkipReport()
    assert [r.cid for r in sources.read_chebi20(str(chebi), report=report, keep_unreadable=True)] == ["7", "8"]
    assert [line for line, _ in report.files[str(chebi)].kept_unreadable] == [1]


def test_a_uspto50k_header_is_found_however_spelt_and_one_without_the_column_is_refused(tmp_path):
    """As ChEBI-20's header: `RXN_SMILES` (or with a space after a comma) was `expected a CSV header with a
    'rxn_smiles' column`."""
    uspto = tmp_path / "train.csv"
    uspto.write_text("Class, ID, RXN_SMILES\n1,US1,CC(=O)O.OCC>>CCOC(C)=O\n")
    (reaction,) = sources.read_uspto50k(str(uspto), strict=True)
    assert (reaction.precursors, reaction.product) == ("CC(=O)O.CCO", "CCOC(C)=O")
    uspto.write_text("class,id,reaction\n1,US1,CC(=O)O.OCC>>CCOC(C)=O\n")
    with pytest.raises(sources.DataFormatError, match=r"train.csv:1: expected a CSV header with a 'rxn_smiles' column"):
        sources.read_uspto50k(str(uspto))
