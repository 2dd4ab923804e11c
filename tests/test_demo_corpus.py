"""The demo corpus: real formats, valid chemistry, parseable actions, disjoint splits, determinism."""

from __future__ import annotations

import csv
import os
import pathlib
import random
import subprocess
import sys

import pytest
from rdkit import Chem
from rdkit.Chem import rdMolDescriptors

from textchem_jax.chem import canonicalize, parse_smiles, precursors_and_products
from textchem_jax.data import sources
from textchem_jax.data.demo import DEMO_FILES, demo_data_dir, describe_molecule, write_demo_corpus
from textchem_jax.metrics.action_grammar import parse_actions

SPLITS = {"chebi20": ("train", "validation", "test"), "uspto_mit": ("train", "valid", "test"),
          "paragraph2actions": ("train", "valid", "test")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> pathlib.Path:
    return write_demo_corpus(tmp_path_factory.mktemp("demo") / "seed0", seed=0)


def _read_bytes(directory: pathlib.Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in DEMO_FILES}


def _lines(path: pathlib.Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _chebi_rows(corpus: pathlib.Path, split: str) -> list[dict[str, str]]:
    with open(corpus / "chebi20" / f"{split}.txt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_layout_and_counts(corpus):
    written = sorted(str(p.relative_to(corpus)) for p in corpus.rglob("*") if p.is_file())
    assert written == sorted(DEMO_FILES)
    chebi = {split: _chebi_rows(corpus, split) for split in SPLITS["chebi20"]}
    uspto = {split: _lines(corpus / "uspto_mit" / f"{split}.txt") for split in SPLITS["uspto_mit"]}
    src = {split: _lines(corpus / "paragraph2actions" / f"src-{split}.txt") for split in SPLITS["paragraph2actions"]}
    tgt = {split: _lines(corpus / "paragraph2actions" / f"tgt-{split}.txt") for split in SPLITS["paragraph2actions"]}
    assert [len(chebi[s]) for s in SPLITS["chebi20"]] == [480, 60, 60]
    assert [len(uspto[s]) for s in SPLITS["uspto_mit"]] == [480, 60, 60]
    assert [len(src[s]) for s in SPLITS["paragraph2actions"]] == [240, 30, 30]
    assert {s: len(v) for s, v in tgt.items()} == {s: len(v) for s, v in src.items()}


def test_chebi_format(corpus):
    for split in SPLITS["chebi20"]:
        assert _lines(corpus / "chebi20" / f"{split}.txt")[0] == "CID\tSMILES\tdescription"
        for row in _chebi_rows(corpus, split):
            assert list(row) == ["CID", "SMILES", "description"] and None not in row.values()
            assert row["CID"].isdigit()
            assert row["description"].startswith("The molecule is ")
            # Backslashes come doubled, as in ChEBI-20; undoubled, the SMILES is canonical.
            assert "\\" not in row["SMILES"].replace("\\\\", "")
            smiles = row["SMILES"].replace("\\\\", "\\")
            assert parse_smiles(smiles).ok and canonicalize(smiles) == smiles
    rows = [row for split in SPLITS["chebi20"] for row in _chebi_rows(corpus, split)]
    assert len({row["CID"] for row in rows}) == len(rows)
    assert sum("\\\\" in row["SMILES"] for row in rows) >= 5
    assert sum("/" in row["SMILES"] for row in rows) >= 5
    assert sum("@" in row["SMILES"] for row in rows) >= 5


def test_real_readers_load_everything(corpus):
    report = sources.SkipReport()
    chebi = [sources.read_chebi20(str(corpus / "chebi20" / f"{s}.txt"), strict=True, report=report)
             for s in SPLITS["chebi20"]]
    reactions = [sources.read_uspto_mit(str(corpus / "uspto_mit" / f"{s}.txt"), strict=True, report=report)
                 for s in SPLITS["uspto_mit"]]
    pairs = [sources.read_paragraph2actions(str(corpus / "paragraph2actions" / f"src-{s}.txt"),
                                            str(corpus / "paragraph2actions" / f"tgt-{s}.txt"), strict=True,
                                            report=report) for s in SPLITS["paragraph2actions"]]
    assert report.total_skipped == 0
    assert [len(x) for x in chebi] == [480, 60, 60] and [len(x) for x in reactions] == [480, 60, 60]
    assert [len(x) for x in pairs] == [240, 30, 30]
    assert any("\\" in record.smiles for split in chebi for record in split)  # single backslash once read


def test_reactions_are_valid_and_change_something(corpus):
    for split in SPLITS["uspto_mit"]:
        for line in _lines(corpus / "uspto_mit" / f"{split}.txt"):
            left, separator, product = line.partition(">>")
            assert separator and left and product and " " not in line
            components = left.split(".")
            assert len(components) >= 2
            assert all(parse_smiles(c).ok for c in components), line
            product_mol = Chem.MolFromSmiles(product)
            assert product_mol is not None and canonicalize(product) == product
            assert product not in {canonicalize(c) for c in components}
            precursors, products = precursors_and_products(line)
            assert products == product and precursors


def test_actions_parse_and_sentences_read_like_prose(corpus):
    names = set()
    for split in SPLITS["paragraph2actions"]:
        sentences = _lines(corpus / "paragraph2actions" / f"src-{split}.txt")
        targets = _lines(corpus / "paragraph2actions" / f"tgt-{split}.txt")
        for sentence, target in zip(sentences, targets):
            assert sentence[0].isupper() or sentence[0].isdigit()
            assert sentence.endswith(".")
            names.update(action.name for action in parse_actions(target))
    assert {"ADD", "STIR", "CONCENTRATE", "WASH", "EXTRACT", "YIELD", "PURIFY", "FILTER"} <= names


def test_splits_are_disjoint(corpus):
    molecules = {s: {canonicalize(r["SMILES"]) for r in _chebi_rows(corpus, s)} for s in SPLITS["chebi20"]}
    products = {s: {line.split(">>")[1] for line in _lines(corpus / "uspto_mit" / f"{s}.txt")}
                for s in SPLITS["uspto_mit"]}
    sentences = {s: set(_lines(corpus / "paragraph2actions" / f"src-{s}.txt")) for s in SPLITS["paragraph2actions"]}
    for by_split, total in ((molecules, 600), (products, 600), (sentences, 300)):
        assert sum(len(v) for v in by_split.values()) == total  # no duplicates inside a split either
        parts = list(by_split.values())
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])


def test_descriptions_follow_the_structure(corpus):
    acid = Chem.MolFromSmarts("[CX3](=O)[OX2H1]")
    nitrile = Chem.MolFromSmarts("C#N")
    for split in SPLITS["chebi20"]:
        for row in _chebi_rows(corpus, split):
            mol = Chem.MolFromSmiles(row["SMILES"].replace("\\\\", "\\"))
            text = row["description"]
            assert ("carboxylic acid" in text) == mol.HasSubstructMatch(acid), row
            assert ("nitrile" in text) == mol.HasSubstructMatch(nitrile), row
            if "molecular formula is " in text:
                assert f"molecular formula is {rdMolDescriptors.CalcMolFormula(mol)}." in text
            assert ("stereocentre" in text or "enantiomer" in text) == ("@" in row["SMILES"]), row
            geometry = "-geometry" in text or "-configured double bond" in text
            assert geometry == ("/" in row["SMILES"] or "\\" in row["SMILES"]), row


def test_describe_molecule_depends_on_functional_groups():
    acid = describe_molecule("OC(=O)c1ccccc1", random.Random(0))
    ester = describe_molecule("COC(=O)c1ccccc1", random.Random(0))
    assert acid != ester
    assert "monocarboxylic acid" in acid and "ester" not in acid
    assert "carboxylic ester" in ester and "methyl ester" in ester
    assert "(E)" in describe_molecule("C/C=C/c1ccccc1", random.Random(0))
    assert "(Z)" in describe_molecule("C/C=C\\c1ccccc1", random.Random(0))
    with pytest.raises(ValueError):
        describe_molecule("C1CC", random.Random(0))


def test_same_seed_same_bytes_other_seed_differs(corpus, tmp_path):
    assert _read_bytes(write_demo_corpus(tmp_path / "again", seed=0)) == _read_bytes(corpus)
    other = _read_bytes(write_demo_corpus(tmp_path / "seed1", seed=1))
    assert all(other[name] != data for name, data in _read_bytes(corpus).items())


def test_output_does_not_depend_on_hash_randomization(tmp_path):
    small = dict(num_molecules=40, num_reactions=40, num_procedures=30)
    write_demo_corpus(tmp_path / "here", seed=3, **small)
    script = (f"from textchem_jax.data.demo import write_demo_corpus; "
              f"write_demo_corpus({str(tmp_path / 'there')!r}, seed=3, **{small!r})")
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert _read_bytes(tmp_path / "here") == _read_bytes(tmp_path / "there")


def test_counts_are_respected(tmp_path):
    directory = write_demo_corpus(tmp_path, seed=5, num_molecules=20, num_reactions=30, num_procedures=10)
    chebi = sum(len(_chebi_rows(directory, s)) for s in SPLITS["chebi20"])
    uspto = sum(len(_lines(directory / "uspto_mit" / f"{s}.txt")) for s in SPLITS["uspto_mit"])
    procedures = sum(len(_lines(directory / "paragraph2actions" / f"src-{s}.txt")) for s in SPLITS["paragraph2actions"])
    assert (chebi, uspto, procedures) == (20, 30, 10)
    assert len(_chebi_rows(directory, "test")) == 2
    with pytest.raises(ValueError, match="num_reactions"):
        write_demo_corpus(tmp_path / "bad", num_reactions=-1)


def test_demo_data_dir_is_cached_and_complete(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    directory = demo_data_dir(seed=0)
    assert directory.parent == tmp_path / "textchem_jax" and directory.name.startswith("demo-0-")
    assert _read_bytes(directory) == _read_bytes(corpus)
    stamp = (directory / DEMO_FILES[0]).stat().st_mtime_ns
    assert demo_data_dir(seed=0) == directory
    assert (directory / DEMO_FILES[0]).stat().st_mtime_ns == stamp  # reused, not rewritten
    assert [p.name for p in directory.parent.iterdir()] == [directory.name]  # no staging folder left
