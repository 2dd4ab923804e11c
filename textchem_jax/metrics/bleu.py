"""NLTK corpus BLEU with one reference per example, as every reference script in the field calls it."""

from __future__ import annotations

import warnings
from collections.abc import Sequence


def corpus_bleu(
    references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]], weights: tuple[float, ...] = (0.25,) * 4
) -> float:
    """NLTK `corpus_bleu` (no smoothing) over token sequences; strings are scored per character."""
    from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NLTK warns when an n-gram order has no overlap
        return float(nltk_corpus_bleu([[list(r)] for r in references], [list(h) for h in hypotheses], weights=weights))
