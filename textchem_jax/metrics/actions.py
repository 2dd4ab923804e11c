"""Paragraph-to-actions metrics (Vaucher et al. 2020, Nature Communications 11, 3601).

- `exact_match`: prediction equals target (surrounding whitespace ignored);
- `levenshtein_similarity`: mean of 1 - edit distance / length of the longer string (1 for two empty);
- `partial_accuracy_90`, `partial_accuracy_75`: fraction of pairs with that similarity at least 0.9 / 0.75;
- `modified_bleu`: NLTK BLEU-4 over whitespace tokens, each side padded with empty tokens to four, so
  that short but correct sequences are not scored zero (the paper's definition);
- `bleu2`: NLTK BLEU with weights (.5, .5) over whitespace tokens (the figure the Text+Chem T5 paper
  reports);
- `validity`: fraction of predictions that parse in the action language (`action_grammar`), as the reference's
  `action_string_validity` counts them: the final period may be missing, and a prediction with no action at all
  (empty, or a lone period) counts as valid.
"""

from __future__ import annotations

from collections.abc import Sequence

from rapidfuzz.distance import Levenshtein

from textchem_jax.metrics._inputs import as_text, check_lengths, top1
from textchem_jax.metrics.action_grammar import valid_prediction
from textchem_jax.metrics.bleu import corpus_bleu


def _padded(tokens: list[str]) -> list[str]:
    return tokens + [""] * max(0, 4 - len(tokens))


def paragraph2actions_metrics(targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """SeqIO metric function for procedure text -> action sequence (keys: module docstring)."""
    check_lengths(targets, predictions, "paragraph2actions_metrics")
    if not targets:
        raise ValueError("paragraph2actions_metrics: no examples to score")
    targets = [as_text(t).strip() for t in targets]
    predictions = [as_text(top1(p)).strip() for p in predictions]
    n = len(targets)
    similarities = [Levenshtein.normalized_similarity(t, p) for t, p in zip(targets, predictions)]
    target_tokens = [t.split() for t in targets]
    predicted_tokens = [p.split() for p in predictions]
    return {
        "bleu2": corpus_bleu(target_tokens, predicted_tokens, (0.5, 0.5)),
        "modified_bleu": corpus_bleu(
            [_padded(t) for t in target_tokens], [_padded(p) for p in predicted_tokens], (0.25,) * 4
        ),
        "levenshtein_similarity": sum(similarities) / n,
        "exact_match": sum(t == p for t, p in zip(targets, predictions)) / n,
        "partial_accuracy_90": sum(s >= 0.9 for s in similarities) / n,
        "partial_accuracy_75": sum(s >= 0.75 for s in similarities) / n,
        "validity": sum(valid_prediction(p) for p in predictions) / n,
    }
