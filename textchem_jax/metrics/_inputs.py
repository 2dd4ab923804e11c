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


def top1(prediction: object) -> object:
    """The best prediction when a list of beams (best first) is given."""
    if isinstance(prediction, (list, tuple)):
        return prediction[0] if prediction else None
    return prediction
