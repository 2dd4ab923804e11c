"""What a task's metric functions need beyond `(targets, predictions)`, set by whoever evaluates.

SeqIO calls a metric function with targets and predictions only, yet the paper's retrosynthesis score
needs a forward model (round-trip accuracy: the multi-task model under evaluation maps its predicted
precursors back) and MolT5's caption BLEU/METEOR need the SciBERT tokenizer when the user has one.
Our evaluation (`textchem-eval`, training's inference evaluation) sets both for the duration of an
evaluation with `metric_settings(...)`; the registered tasks' metric functions read `current()`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator


@dataclasses.dataclass(frozen=True)
class MetricSettings:
    forward_fn: Callable[[list[str]], list[str]] | None = None  # precursors -> predicted products
    caption_tokenizer: str | None = None  # a Hugging Face tokenizer folder, local or gs:// (SciBERT for MolT5's numbers)


_current = MetricSettings()


def current() -> MetricSettings:
    return _current


@contextlib.contextmanager
def metric_settings(**settings) -> Iterator[MetricSettings]:
    """Inside the block, `current()` has `settings` (a plain global, not a context variable: SeqIO may
    compute metrics on its own thread)."""
    global _current
    previous, _current = _current, dataclasses.replace(_current, **settings)
    try:
        yield _current
    finally:
        _current = previous
