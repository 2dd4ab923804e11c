"""Normalizing what SeqIO hands to metric functions: lists of one entry per example; bytes, None and non-strings become text."""

from __future__ import annotations

import logging
from collections.abc import Sequence

logger = logging.getLogger("textchem_jax.metrics")


def as_text(value: object) -> str:
    """Text of one target or prediction; None and undecodable bytes become the empty string."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)


def _check_examples(value: object, name: str, metric: str) -> None:
    """One entry per example: a plain string was scored character by character. An iterator is refused, not
    read: the caller goes on with its own argument, which `list()` here would have emptied."""
    if isinstance(value, (str, bytes)) or not (isinstance(value, Sequence) or getattr(value, "ndim", 0) >= 1):
        fix = f"wrap one example as [{name[:-1]}]" if isinstance(value, (str, bytes)) else "pass list(...) of it"
        raise ValueError(
            f"{metric}: {name} must be a list of strings (one per example), got a {type(value).__name__}; {fix}"
        )


def check_lengths(targets: Sequence, predictions: Sequence, metric: str) -> None:
    """Both arguments are lists (or tuples, NumPy arrays) with one entry per example."""
    _check_examples(targets, "targets", metric)
    _check_examples(predictions, "predictions", metric)
    if len(targets) != len(predictions):
        raise ValueError(
            f"{metric}: {len(targets)} targets but {len(predictions)} predictions; "
            "pass one prediction (or one list of beams) per target"
        )


def is_beams(prediction: object) -> bool:
    """Whether a prediction is a list of beams, best first: a list, a tuple or a NumPy row of them (what
    `np.array(beams)` or a seqio array of top-k outputs gives), rather than one string."""
    return isinstance(prediction, (list, tuple)) or getattr(prediction, "ndim", 0) >= 1


def top1(prediction: object) -> object:
    """The best prediction when a list of beams (best first) is given."""
    if is_beams(prediction):
        return prediction[0] if len(prediction) else None
    return prediction
