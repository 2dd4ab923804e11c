"""paragraph2actions: the action-language parser and every metric key."""

from __future__ import annotations

import pytest

from textchem_jax.metrics import paragraph2actions_metrics
from textchem_jax.metrics.action_grammar import ActionSyntaxError, is_valid_action_sequence, parse_actions

KEYS = {"bleu2", "modified_bleu", "levenshtein_similarity", "exact_match", "partial_accuracy_90", "partial_accuracy_75", "validity"}


@pytest.mark.needs_data
def test_every_real_action_sequence_parses_as_the_reference_reads_it(data):
    """The reference's reader (paragraph2actions' ReadableConverter) reads 97 of the 100 public targets: the three
    bare `INVALIDACTION.` lines name no error, which its InvalidAction requires."""
    lines = []
    for split in ("train", "valid", "test"):
        lines += (data / "paragraph2actions" / f"tgt-{split}.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 100
    refused = [line for line in lines if not is_valid_action_sequence(line)]
    assert refused == ["INVALIDACTION."] * 3
    names = {action.name for line in lines if line not in refused for action in parse_actions(line)}
    assert {"ADD", "STIR", "MAKESOLUTION", "PH", "YIELD", "NOACTION"} <= names
    assert paragraph2actions_metrics(lines, lines)["validity"] == 0.97


def test_parser_details_and_errors():
    actions = parse_actions("ADD water (10 mL) dropwise at 0 °C; WASH with brine 3 x; FILTER keep filtrate.")
    assert [a.name for a in actions] == ["ADD", "WASH", "FILTER"]
    assert actions[0].details == {"material": "water (10 mL)", "dropwise": "dropwise", "temperature": "0 °C"}
    assert actions[1].details == {"material": "brine", "repetitions": "3"}
    assert parse_actions("STIR for 1 h")[0].details == {"duration": "1 h"}  # the final period may be missing
    for bad, message in [
        ("HEAT to 50 °C.", "unknown action 'HEAT'"),
        ("ADD.", "details do not fit ADD"),
        ("COLLECTLAYER top.", "action 1"),
        ("STIR; WASH water.", "action 2"),
        ("WAIT at rt.", "no duration"),
        ("", "empty"),
    ]:
        with pytest.raises(ActionSyntaxError, match=message):
            parse_actions(bad)


# Each checked with paragraph2actions' own `action_string_validity` (rxn4chemistry/paragraph2actions @37d9642).
VALID_IN_THE_REFERENCE = [
    "STIR for 2 h at rt; CONCENTRATE",  # no final period: a decode cut at its length limit
    "MAKESOLUTION tert-butyl 4-oxopiperidine-1-carboxylate (4.98 g) and THF; ADD SLN.",  # `with` missing: still read
    "WASH with water",
    "PH with HCl to pH 3.",
    "INVALIDACTION something.",
    "REFLUX for 3 h under N2 with Dean-Stark apparatus.",
    "STIR for  at rt.",  # an empty duration
    "ADD A;\u200c B.",  # a "; " inside a detail, as the reference writes it
    "WAIT for 2 h.",
    "DEGAS.",
    "DRYSOLUTION.",
    "QUENCH with water dropwise at 0 °C.",
    "",  # no action at all: an empty list to the reference
    ".",
]
INVALID_IN_THE_REFERENCE = [
    "MAKESOLUTION with NaH (60 mg) THF (2 mL); ADD SLN.",  # `and` missing: one material
    "EXTRACT with 3 x.",  # no solvent
    "STIR for at room temperature.",  # no duration after `for`
    "INVALIDACTION.",  # no error
    "PH to pH 3.",  # PH needs its material
    "RECRYSTALLIZE.",
    "WAIT at rt.",  # WAIT needs its duration
    "PARTITION with A and B and C.",  # exactly two
    "STIR..",
    "STIR; ; CONCENTRATE.",
    "FILTER keep solid.",
    "COLLECTLAYER both.",
    "CONCENTRATE .",
    "SETTEMPERATURE.",
    "YIELD.",
    "QUENCH dropwise.",
    "MICROWAVE under N2.",
]


def test_validity_is_the_references():
    """paragraph2actions' validity counts what the reference's reader accepts: it disagreed both ways (a missing
    final period, `MAKESOLUTION` without `with` refused; `EXTRACT with 3 x`, `STIR for at ...`, a bare
    `INVALIDACTION` accepted)."""
    for text in VALID_IN_THE_REFERENCE:
        assert paragraph2actions_metrics(["NOACTION."], [text])["validity"] == 1.0, text
    for text in INVALID_IN_THE_REFERENCE:
        assert paragraph2actions_metrics(["NOACTION."], [text])["validity"] == 0.0, text
    assert not is_valid_action_sequence("") and not is_valid_action_sequence(".")  # valid, but no action sequence


def test_hand_checked_metrics():
    targets = ["CONCENTRATE.", "STIR for 2 h at rt; FILTER.", "WASH with water."]
    predictions = ["CONCENTRATE.", "STIR for 2 h at rt; FILTER keep filtrate.", "WASH with water"]
    m = paragraph2actions_metrics(targets, predictions)
    assert set(m) == KEYS
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert m["validity"] == 1.0  # "WASH with water" reads without its period
    sim2 = 1 - len(" keep filtrate") / len("STIR for 2 h at rt; FILTER keep filtrate.")
    sim3 = 1 - 1 / 16  # the missing period
    assert m["levenshtein_similarity"] == pytest.approx((1 + sim2 + sim3) / 3, abs=1e-12)
    assert m["partial_accuracy_90"] == pytest.approx(2 / 3) and m["partial_accuracy_75"] == pytest.approx(2 / 3)
    # BLEU-2 by hand over whitespace tokens ("FILTER." != "FILTER", "water." != "water"):
    # unigrams matched 1 + 6 + 2 of 1 + 9 + 3; bigrams 0 + 5 + 1 of 1 + 8 + 2 (NLTK counts at least one
    # bigram per sentence); hypotheses (13 tokens) are longer than references (11): no brevity penalty.
    assert m["bleu2"] == pytest.approx((9 / 13 * 6 / 11) ** 0.5)


def test_modified_bleu_does_not_zero_short_correct_sequences():
    m = paragraph2actions_metrics(["CONCENTRATE.", "PURIFY."], ["CONCENTRATE.", "PURIFY."])
    assert m["modified_bleu"] == pytest.approx(1.0)  # plain BLEU-4 of one-word sentences would be 0
    assert m["exact_match"] == 1.0 and m["levenshtein_similarity"] == 1.0 and m["validity"] == 1.0


def test_garbage_never_raises():
    m = paragraph2actions_metrics(["STIR.", "ADD water."], [None, "é" * 3])
    assert m["validity"] == 0.5 and m["exact_match"] == 0.0  # None reads as the empty prediction: no action, valid
