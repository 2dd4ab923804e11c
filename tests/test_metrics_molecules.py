"""text2mol_metrics: hand-checked cases, robustness, and parity with the MolT5 reference definitions."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rdkit import Chem, DataStructs
from rdkit.Chem import MACCSkeys

from molt5_reference import reference_text2mol
from textchem_jax.chem import randomize_smiles, unescape_backslashes
from textchem_jax.metrics import text2mol_metrics

KEYS = {"bleu", "exact_match", "levenshtein", "validity", "maccs_fts", "rdk_fts", "morgan_fts"}


def test_hand_checked_pair():
    # "OCC" is ethanol written backwards: same molecule (exact match), different string.
    m = text2mol_metrics(["CCO"], ["OCC"], num_workers=1)
    assert set(m) == KEYS
    assert m["exact_match"] == 1.0 and m["validity"] == 1.0
    assert m["levenshtein"] == 2.0  # CCO -> OCC: two substitutions
    # char 1-grams 3/3, 2-grams 1/2, 3-grams 0/1: BLEU-4 without smoothing collapses to ~0
    assert m["bleu"] < 1e-100
    assert m["maccs_fts"] == m["rdk_fts"] == m["morgan_fts"] == 1.0


def test_hand_checked_mixture():
    targets = ["CCO", "CCO", "CCC"]
    predictions = ["CCO", "CCN", "not"]
    m = text2mol_metrics(targets, predictions, num_workers=1)
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert m["validity"] == pytest.approx(2 / 3)
    assert m["levenshtein"] == pytest.approx((0 + 1 + 3) / 3)  # "not" vs "CCC": three substitutions
    ethanol, ethylamine = Chem.MolFromSmiles("CCO"), Chem.MolFromSmiles("CCN")
    maccs = DataStructs.TanimotoSimilarity(MACCSkeys.GenMACCSKeys(ethanol), MACCSkeys.GenMACCSKeys(ethylamine))
    assert 0 < maccs < 1
    assert m["maccs_fts"] == pytest.approx((1 + maccs) / 2)  # averaged over the two valid pairs
    assert 0 < m["morgan_fts"] < 1 and 0 < m["rdk_fts"] < 1


def test_doubled_backslash_target_matches_single_backslash_prediction():
    m = text2mol_metrics(["C/C=C\\\\C"], ["C/C=C\\C"], num_workers=1)
    assert m["exact_match"] == 1.0 and m["morgan_fts"] == 1.0
    assert m["levenshtein"] == 1.0  # the raw strings differ by the stored extra backslash
    trans = text2mol_metrics(["C/C=C\\C"], ["C/C=C/C"], num_workers=1)
    assert trans["exact_match"] == 0.0  # cis vs trans is a different molecule


def test_fragment_bond_prediction_is_scored_like_the_reference():
    # RDKit reads `~` as a bond of unspecified type: the prediction parses (valid) but has no InChI.
    targets, predictions = ["[Na+].[OH-]", "CCO"], ["[Na+]~[OH-]", "C~C~O"]
    m = text2mol_metrics(targets, predictions, num_workers=1)
    assert m["validity"] == 1.0 and m["exact_match"] == 0.0
    assert m == pytest.approx(reference_text2mol(targets, predictions))


def test_empty_prediction_counts_as_valid_like_the_reference():
    m = text2mol_metrics(["CCO"], [""], num_workers=1)
    ref = reference_text2mol(["CCO"], [""])
    assert m["validity"] == ref["validity"] == 1.0
    assert m["exact_match"] == 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=30), st.none(), st.binary(max_size=10), st.just("C1CC"), st.just("CCé")), min_size=1, max_size=6))
def test_garbage_predictions_never_raise(predictions):
    m = text2mol_metrics(["CCO"] * len(predictions), predictions, num_workers=1)
    assert set(m) == KEYS
    assert 0.0 <= m["validity"] <= 1.0 and m["levenshtein"] >= 0


def test_length_mismatch_and_empty_input_are_clear_errors():
    with pytest.raises(ValueError, match="2 targets but 1 predictions"):
        text2mol_metrics(["C", "CC"], ["C"])
    with pytest.raises(ValueError, match="no examples"):
        text2mol_metrics([], [])


def test_beam_lists_score_their_best_beam():
    assert text2mol_metrics(["CCO"], [["OCC", "CCN"]], num_workers=1)["exact_match"] == 1.0


def perturb(smiles: list[str], seed: int) -> list[str]:
    """Model-like predictions: copies, other spellings, one-character edits, other molecules, blanks."""
    rng = random.Random(seed)
    out = []
    for s in smiles:
        u = rng.random()
        if u < 0.3:
            out.append(s)
        elif u < 0.45:
            out.append(randomize_smiles(s, rng))
        elif u < 0.7:
            i = rng.randrange(len(s))
            out.append(s[:i] + rng.choice("CNO()=1[]#") + s[i + 1 :])
        elif u < 0.97:
            out.append(rng.choice(smiles))
        else:
            out.append(rng.choice(["", "garbage", "C" * 5]))
    return out


@pytest.mark.needs_data
def test_perfect_predictions_on_chebi_score_one(chebi_test_rows):
    targets = [unescape_backslashes(r["SMILES"]) for r in chebi_test_rows[:400]]
    m = text2mol_metrics(targets, list(targets))
    assert m["bleu"] == pytest.approx(1.0)
    assert m["levenshtein"] == 0.0
    for key in ("exact_match", "validity", "maccs_fts", "morgan_fts"):
        assert m[key] == 1.0, key
    # A molecule without bonds (a lone ion) has an all-zero RDKit path fingerprint, and RDKit's
    # Tanimoto of two empty vectors is 0: the reference scores such a perfect pair 0, and so do we.
    with_paths = [Chem.RDKFingerprint(Chem.MolFromSmiles(t)).GetNumOnBits() > 0 for t in targets]
    assert not all(with_paths)
    assert m["rdk_fts"] == pytest.approx(sum(with_paths) / len(targets))


@pytest.mark.needs_data
@pytest.mark.parametrize("stored_form", [True, False])
def test_parity_with_reference_on_chebi(chebi_test_rows, stored_form):
    """Same numbers as the MolT5 definitions (1e-9) on real ChEBI-20 targets, raw or unescaped."""
    rows = chebi_test_rows[::3]
    targets = [r["SMILES"] if stored_form else unescape_backslashes(r["SMILES"]) for r in rows]
    predictions = perturb([unescape_backslashes(r["SMILES"]) for r in rows], seed=5)
    ours = text2mol_metrics(targets, predictions)  # parallel path
    reference = reference_text2mol(targets, predictions)
    for key in KEYS:
        assert ours[key] == pytest.approx(reference[key], abs=1e-9), key
    assert text2mol_metrics(targets, predictions, num_workers=1) == ours  # serial path agrees exactly
