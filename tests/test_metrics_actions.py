"""paragraph2actions: the action-language parser and every metric key."""

from __future__ import annotations

import pytest

from textchem_jax.metrics import paragraph2actions_metrics
from textchem_jax.metrics.action_grammar import ActionSyntaxError, parse_actions

KEYS = {"bleu2", "modified_bleu", "levenshtein_similarity", "exact_match", "partial_accuracy_90", "partial_accuracy_75", "validity"}


@pytest.mark.needs_data
def test_every_real_action_sequence_parses(data):
    lines = []
    for split in ("train", "valid", "test"):
        lines += (data / "paragraph2actions" / f"tgt-{split}.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 100
    names = {action.name for line in lines for action in parse_actions(line)}
    assert {"ADD", "STIR", "MAKESOLUTION", "PH", "YIELD", "NOACTION"} <= names


def test_parser_details_and_errors():
    actions = parse_actions("ADD water (10 mL) dropwise at 0 °C; WASH with brine 3 x; FILTER keep filtrate.")
    assert [a.name for a in actions] == ["ADD", "WASH", "FILTER"]
    assert actions[0].details == {"material": "water (10 mL)", "dropwise": "dropwise", "temperature": "0 °C"}
    assert actions[1].details == {"material": "brine", "repetitions": "3"}
    for bad, message in [
        ("STIR for 1 h", "ends with '.'"),
        ("HEAT to 50 °C.", "unknown action 'HEAT'"),
        ("ADD.", "details do not fit ADD"),
        ("COLLECTLAYER top.", "action 1"),
        ("STIR; WASH water.", "action 2"),
        ("", "empty"),
    ]:
        with pytest.raises(ActionSyntaxError, match=message):
            parse_actions(bad)


def test_hand_checked_metrics():
    targets = ["CONCENTRATE.", "STIR for 2 h at rt; FILTER.", "WASH with water."]
    predictions = ["CONCENTRATE.", "STIR for 2 h at rt; FILTER keep filtrate.", "WASH with water"]
    m = paragraph2actions_metrics(targets, predictions)
    assert set(m) == KEYS
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert m["validity"] == pytest.approx(2 / 3)
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
    assert m["validity"] == 0.0 and m["exact_match"] == 0.0
