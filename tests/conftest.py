"""Shared fixtures: the real data folder (TEXTCHEM_DATA_DIR) and small samples read from it; the skip of `gpu` tests."""

from __future__ import annotations

import csv
import os
import pathlib
import tempfile

import pytest

# One persistent XLA compilation cache for the whole run: the two xdist workers and every CLI subprocess
# they start (which inherit the environment) compile the same quickstart train step and decoders again
# and again. Set before jax is imported, so the workers read it too. Measured on a 2-core AVX2 machine:
# the full suite took 3,031 s without it and 2,628 s with it starting empty; one train/infer/eval CLI test
# 145 s without it, 115 s with it warm. Keys hold the HLO, the flags and the jax version, so entries never
# go stale; a user's own JAX_COMPILATION_CACHE_DIR wins.
_XLA_CACHE = pathlib.Path(tempfile.gettempdir()) / "textchem-jax-tests-xla-cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_XLA_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

# CI gives the data folder relative to the repository (`TEXTCHEM_DATA_DIR=../shared/data`); tests that run a
# command in another working directory (a tmp folder, a fake HOME) pass it on, so it is made absolute once here.
if os.environ.get("TEXTCHEM_DATA_DIR"):
    os.environ["TEXTCHEM_DATA_DIR"] = os.path.abspath(os.environ["TEXTCHEM_DATA_DIR"])


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


@pytest.fixture(autouse=True)
def _data_folder_restored():
    """A test that parses a gin file binding DATA_DIR, or runs robustness on a run that records one, sets the data
    folder for the whole process (as textchem-eval does); the next test in the same worker that expects none found
    one (test_no_data_dir_is_a_clear_error did not raise). The folder is put back after each test."""
    import sys

    module = sys.modules.get("textchem_jax.data.datasets")
    before = getattr(module, "_data_dir_override", None)
    yield
    module = sys.modules.get("textchem_jax.data.datasets")
    if module is not None:
        module.set_data_dir(before)


@pytest.fixture(autouse=True)
def _tasks_vocabulary_restored():
    """A test that trains or converts a model of another vocabulary registers our tasks again with it
    (`seqio_tasks.use_vocabulary`); the next test in the same worker read the demo tasks with that 600-piece
    vocabulary (`4'-bromo...` decoded as `4 ⁇ -bromo`). The tasks' vocabulary is put back after each test."""
    import sys

    module = sys.modules.get("textchem_jax.data.seqio_tasks")
    before = getattr(module, "_vocabulary", None)
    yield
    module = sys.modules.get("textchem_jax.data.seqio_tasks")
    if module is not None and module._vocabulary is not None and module._vocabulary is not before:
        module.use_vocabulary(before if before is not None else module.vocabularies.task_vocabulary())


def _has_gpu() -> bool:
    import jax  # only when a `gpu` test is collected: a conftest import does not start a jax backend

    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:  # no GPU backend (or JAX_PLATFORMS excludes it)
        return False


def pytest_collection_modifyitems(config, items):
    _slow_modules_first(items)
    gpu_tests = [item for item in items if item.get_closest_marker("gpu") is not None]
    if gpu_tests and not _has_gpu():
        skip = pytest.mark.skip(reason="needs a GPU: jax has no GPU device")
        for item in gpu_tests:
            item.add_marker(skip)


def _slow_modules_first(items) -> None:
    """Modules with a `slow` test run first, each kept whole (its module fixtures are set up once): with
    xdist workers the long subprocess tests start early instead of leaving one worker alone at the end (full
    suite, same day, same tree: 1,552 s of tests in this order, 1,621 s in collection order)."""
    slow = {item.module for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.module not in slow)  # stable: the order within each group stays
