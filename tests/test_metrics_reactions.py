"""forward_metrics and retro_metrics: canonical set matching, top-k, invalid rate, round trip."""

from __future__ import annotations

import numpy as np
import pytest

from textchem_jax.chem import precursors_and_products
from textchem_jax.metrics import (
    forward_metrics,
    mol2text_metrics,
    paragraph2actions_metrics,
    retro_metrics,
    retro_postprocessor,
    text2mol_metrics,
)

METRIC_FUNCTIONS = [forward_metrics, retro_metrics, text2mol_metrics, mol2text_metrics, paragraph2actions_metrics]


def test_forward_hand_checked():
    targets = ["CCOC(C)=O", "O=C([O-])c1ccccc1~[Na+]", "c1ccccc1O", "CC"]
    predictions = [
        "O=C(OCC)C",  # same product, other spelling
        "[Na+].[O-]C(=O)c1ccccc1",  # `.` instead of `~`, other order: still the same product
        "garbage(",  # invalid
        "CCC",  # wrong
    ]
    m = forward_metrics(targets, predictions, num_workers=1)
    assert m == {"accuracy": 0.5, "invalid_rate": 0.25}


def test_top_k_from_beams():
    targets = ["CCO", "CCN", "CCC"]
    beams = [["CCO", "x", "y"], ["x", "NCC", "y"], ["x", "y", "CC"]]
    m = forward_metrics(targets, beams, num_workers=1)
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["accuracy_top2"] == pytest.approx(2 / 3) and m["accuracy_top3"] == pytest.approx(2 / 3)
    assert m["invalid_rate"] == pytest.approx(0.0 + 2 / 3)  # "x" is not a SMILES


def test_beams_as_a_numpy_array_score_as_the_same_lists():
    """`np.array(beams)` (how beams come out of a decoder) was read as one string per row: all invalid."""
    targets = ["CCO", "CCN"]
    beams = [["CCO", "C"], ["C", "NCC"]]
    expected = forward_metrics(targets, beams, num_workers=1)
    assert expected == {"accuracy": 0.5, "accuracy_top2": 1.0, "invalid_rate": 0.0}
    assert forward_metrics(targets, np.array(beams), num_workers=1) == expected
    assert forward_metrics(targets, [np.array(b) for b in beams], num_workers=1) == expected
    assert retro_metrics(targets, np.array(beams), num_workers=1) == expected
    assert text2mol_metrics(targets, np.array(beams), num_workers=1) == text2mol_metrics(targets, ["CCO", "C"], num_workers=1)


def test_atom_mapped_targets_match_unmapped_predictions():
    m = forward_metrics(["[CH3:1][C:2](=[O:3])[OH:4]"], ["CC(=O)O"], num_workers=1)
    assert m["accuracy"] == 1.0


def test_retro_set_match_and_round_trip():
    reaction = "[CH3:1][C:2](=[O:3])[OH:4].[CH3:5][CH2:6][OH:7]>O=S(=O)(O)O>[CH3:1][C:2](=[O:3])[O:7][CH2:6][CH3:5]"
    precursors, product = precursors_and_products(reaction)
    assert precursors == "CC(=O)O.CCO.O=S(=O)(O)O"
    predictions = ["OCC.O=S(=O)(O)O.CC(=O)O", "CC(=O)Cl.OCC", "((("]
    targets = [precursors] * 3
    forward_model = {"CC(=O)Cl.OCC": "CCOC(C)=O", "OCC.O=S(=O)(O)O.CC(=O)O": "CCOC(C)=O"}
    m = retro_metrics(targets, predictions, forward_fn=lambda xs: [forward_model[x] for x in xs],
                      products=[product] * 3, num_workers=1)
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["invalid_rate"] == pytest.approx(1 / 3)
    assert m["roundtrip_accuracy"] == pytest.approx(2 / 3)  # an alternative route also counts


def test_retro_targets_can_carry_the_product_through_seqio():
    target = retro_postprocessor(" CC(=O)O.CCO </s>", example={"product": b"CCOC(C)=O"}, is_target=True)
    assert target == {"target": "CC(=O)O.CCO", "product": "CCOC(C)=O"}
    m = retro_metrics([target], ["CCO.CC(=O)O"], forward_fn=lambda xs: ["O=C(C)OCC" for _ in xs], num_workers=1)
    assert m["accuracy"] == 1.0 and m["roundtrip_accuracy"] == 1.0
    with pytest.raises(ValueError, match="one product per example"):
        retro_metrics(["CCO"], ["CCO"], forward_fn=lambda xs: xs)
    for mixed in ([target, "CCO"], ["CCO", target]):  # was half a string, or an AttributeError
        with pytest.raises(ValueError, match="1 of 2 targets are mappings"):
            retro_metrics(mixed, ["CCO", "CCO"], num_workers=1)


@pytest.mark.needs_data
def test_real_uspto50k_reactions_score_perfectly_against_themselves(uspto50k_reactions):
    pairs = [precursors_and_products(r) for r in uspto50k_reactions[:300]]
    precursors = [p for p, _ in pairs]
    products = [q for _, q in pairs]
    assert forward_metrics(products, products)["accuracy"] == 1.0
    mapped_products = [r.split(">>")[1] for r in uspto50k_reactions[:300]]
    assert forward_metrics(mapped_products, products)["accuracy"] == 1.0
    m = retro_metrics(precursors, precursors[::-1], forward_fn=lambda xs: xs, products=precursors[::-1])
    assert m["accuracy"] < 0.05 and m["roundtrip_accuracy"] == 1.0


def test_garbage_never_raises():
    m = forward_metrics(["CCO", "CCO", "CCO", "CCO"], [None, "", "é", []], num_workers=1)
    assert m == {"accuracy": 0.0, "invalid_rate": 1.0}


def test_gt4sd_postprocessor_reads_unknown_pieces_as_backslashes():
    from textchem_jax.metrics import gt4sd_smiles_postprocessor, smiles_postprocessor

    assert gt4sd_smiles_postprocessor("C/C=C<unk>C") == "C/C=C\\C"  # a Hugging Face tokenizer's decoding
    assert gt4sd_smiles_postprocessor("C/C=C \u2047 C</s>") == "C/C=C\\C"  # SentencePiece's
    assert gt4sd_smiles_postprocessor("CC(=O)O") == smiles_postprocessor("CC(=O)O") == "CC(=O)O"


@pytest.mark.parametrize("metric", METRIC_FUNCTIONS, ids=lambda f: f.__name__)
def test_a_plain_string_or_an_iterator_is_one_clear_error_in_every_metric_function(metric):
    """A string was scored character by character (accuracy 0.667 for 'CCN' against 'CCO'); an iterator ended in
    `TypeError: object of type 'list_iterator' has no len()`."""
    with pytest.raises(ValueError, match=r"must be a list of strings \(one per example\), got a str; wrap one example"):
        metric("CCN", "CCO")
    with pytest.raises(ValueError, match=rf"^{metric.__name__}: predictions must be a list .*got a str"):
        metric(["CCN"], "CCO")
    with pytest.raises(ValueError, match=rf"^{metric.__name__}: predictions .*got a list_iterator; pass list\(\.\.\.\)"):
        metric(["CCO"], iter(["CCO"]))
    with pytest.raises(ValueError, match="predictions .*got a generator"):
        metric(["CCO"], (p for p in ["CCO"]))
    assert metric(("CCO",), np.array(["CCO"]))  # tuples and NumPy arrays are lists of examples


@pytest.mark.parametrize(
    "metric",
    METRIC_FUNCTIONS,
    ids=lambda f: f.__name__,
)
def test_targets_as_a_string_or_an_iterator_are_refused(metric):
    with pytest.raises(ValueError, match=rf"^{metric.__name__}: targets must be a list .*got a str"):
        metric("CCO", ["C", "C", "O"])
    with pytest.raises(ValueError, match=rf"^{metric.__name__}: targets .*got a list_iterator"):
        metric(iter(["CCO"]), ["CCO"])
