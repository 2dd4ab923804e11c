"""Shared fixtures: the real data folder (TEXTCHEM_DATA_DIR) and small samples read from it."""

from __future__ import annotations

import csv
import os
import pathlib

import pytest


def data_dir() -> pathlib.Path | None:
    value = os.environ.get("TEXTCHEM_DATA_DIR")
    return pathlib.Path(value) if value and pathlib.Path(value).is_dir() else None


@pytest.fixture(scope="session")
def data() -> pathlib.Path:
    path = data_dir()
    if path is None:
        pytest.skip("TEXTCHEM_DATA_DIR is not set to the shared data folder (e.g. ../shared/data)")
    return path


@pytest.fixture(scope="session")
def chebi_test_rows(data) -> list[dict[str, str]]:
    """ChEBI-20 test rows as stored (SMILES with doubled backslashes)."""
    with open(data / "chebi20" / "test.txt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.fixture(scope="session")
def uspto50k_reactions(data) -> list[str]:
    with open(data / "uspto50k" / "test.csv", encoding="utf-8", newline="") as f:
        return [row["rxn_smiles"] for row in csv.DictReader(f)]
