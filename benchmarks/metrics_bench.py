"""Scores all 3,300 ChEBI-20 test pairs with every text2mol metric: ours against a plain loop.

The peer is a plain single-process loop over the same RDKit/NLTK calls (the MolT5 reference
definitions, `tests/molt5_reference.py`), run in this script on the same inputs. Predictions are
derived from the targets (see `perturb` in tests/test_metrics_molecules.py): 30% copies, 15% other
spellings of the same molecule, 25% one-character edits, 27% other ChEBI molecules, 3% blanks/garbage.

Usage: TEXTCHEM_DATA_DIR=../shared/data python benchmarks/metrics_bench.py
"""

from __future__ import annotations

import csv
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from molt5_reference import reference_text2mol  # noqa: E402
from test_metrics_molecules import perturb  # noqa: E402

from textchem_jax.chem import unescape_backslashes  # noqa: E402
from textchem_jax.metrics import text2mol_metrics  # noqa: E402
from textchem_jax import provenance  # noqa: E402
from textchem_jax.metrics.molecules import clear_molecule_cache  # noqa: E402
from textchem_jax.process_pool import available_cores  # noqa: E402


def main() -> None:
    data = pathlib.Path(os.environ.get("TEXTCHEM_DATA_DIR", ROOT.parent / "shared" / "data"))
    with open(data / "chebi20" / "test.txt", encoding="utf-8", newline="") as f:
        targets = [unescape_backslashes(r["SMILES"]) for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    predictions = perturb(targets, seed=0)
    next_predictions = perturb(targets, seed=1)
    n = len(targets)
    print(f"ChEBI-20 test: {n} pairs, {available_cores()} cores")
    print(provenance.versions_line())

    start = time.perf_counter()
    reference = reference_text2mol(targets, predictions)
    plain = time.perf_counter() - start

    clear_molecule_cache()
    start = time.perf_counter()
    ours = text2mol_metrics(targets, predictions)
    cold = time.perf_counter() - start

    start = time.perf_counter()
    text2mol_metrics(targets, next_predictions)  # the next evaluation of a run: same targets, new predictions
    warm = time.perf_counter() - start

    clear_molecule_cache()
    start = time.perf_counter()
    text2mol_metrics(targets, predictions, num_workers=1)
    serial = time.perf_counter() - start

    worst = max(abs(ours[k] - reference[k]) for k in reference)
    print(f"{'':36}{'seconds':>9}{'pairs/s':>10}{'speed-up':>10}")
    for name, seconds in [
        ("plain loop (MolT5 reference calls)", plain),
        ("ours, 1 process, cold", serial),
        ("ours, all cores, cold", cold),
        ("ours, all cores, next evaluation", warm),
    ]:
        print(f"{name:36}{seconds:9.2f}{n / seconds:10.0f}{plain / seconds:9.2f}x")
    print(f"largest difference from the reference over {len(reference)} metrics: {worst:.2e}")
    print("metrics:", {k: round(v, 4) for k, v in ours.items()})
    print(f"target: full set under 5 s cold -> {'met' if cold < 5 else 'NOT met'} ({cold:.2f} s)")


if __name__ == "__main__":
    main()
