"""Progress lines: the ETA counts from after the first unit of work (which compiles), lines come at most once a
period and always at the end, and only where enabled."""

import re

from textchem_jax.progress import Eta, Heartbeat, ProgressLine


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_eta_leaves_out_the_first_unit_which_compiled():
    eta = Eta(total=10)
    assert eta.update(1, now=20.0) is None  # 20 s: compilation and one unit; no rate yet
    assert eta.update(5, now=24.0) == 5.0  # 4 units in 4 s since: 5 left take 5 s (timed from 0: 16 s)
    assert eta.update(10, now=29.0) == 0.0


def test_lines_come_once_a_period_and_when_done(capsys):
    clock = Clock()
    progress = ProgressLine("decoding test", total=100, period=30.0, clock=clock)
    clock.now = 40.0
    progress.advance(10)  # the first batch, with compilation: a line (40 s passed) without an ETA yet
    clock.now = 50.0
    progress.advance(10)  # 10 s later: no line
    clock.now = 80.0
    progress.advance(30)  # 40 units in 40 s since the first batch: 50 left, 50 s
    clock.now = 130.0
    progress.advance(50)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "decoding test: 10/100 examples (10%) in 40 s, ETA at the next line (the first batch compiled)",
        "decoding test: 50/100 examples (50%) in 80 s, ETA 50 s",
        "decoding test: 100/100 examples in 130.0 s (0.8 examples/s)",
    ]


def test_other_processes_count_without_printing(capsys):
    progress = ProgressLine("decoding test", total=2, period=0.0, enabled=False)
    progress.advance(2)
    assert progress.done == 2 and capsys.readouterr().out == ""


def test_a_heartbeat_shows_a_silent_library_call_is_alive(capsys, tmp_path):
    """`textchem-vocab` was silent for minutes inside SentencePiece's training: now a line comes every period."""
    import io
    import random

    import sentencepiece as spm

    rng = random.Random(0)
    texts = ["".join(rng.choice("abcdefgh CCO()=N[]") for _ in range(120)) for _ in range(20_000)]
    with Heartbeat("training SentencePiece", period=0.2):
        spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=io.BytesIO(), vocab_size=500, minloglevel=2)
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(re.fullmatch(r"training SentencePiece: still working after \d+ s", line) for line in lines), lines
    with Heartbeat("quick", period=30.0):  # ends at once, printing nothing
        pass
    assert capsys.readouterr().out == ""
