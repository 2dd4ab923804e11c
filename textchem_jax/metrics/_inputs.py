"""Normalizing what SeqIO hands to metric functions: bytes, None and non-strings become text."""

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


def check_lengths(targets: Sequence, predictions: Sequence, metric: str) -> None:
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
