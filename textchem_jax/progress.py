"""Progress of long work on the console: how far, how fast, and when it will end.

The first unit of work in a process usually compiles (a train step, a batch of decoding), so an ETA timed from
the start reads far too long: the quickstart's first line read 2,481 s for 200 s of training. Rates and ETAs
here count from the end of the first unit, and a line printed before there is a second says so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Eta:
    """Seconds left of `total` units at the rate measured since the first `update` (whose work compiled)."""

    def __init__(self, total: int):
        self.total = total
        self._since: tuple[float, int] | None = None  # (time, units done) of the first update

    def leave_out(self, seconds: float) -> None:
        """`seconds` spent on other work since the first update do not count in the rate."""
        if self._since is not None:
            self._since = (self._since[0] + seconds, self._since[1])

    def update(self, done: int, now: float) -> float | None:
        """Seconds left once `done` units are done at `now`; None at the first update (no rate yet)."""
        if self._since is None:
            self._since = (now, done)
            return None
        since, since_done = self._since
        return (self.total - done) * (now - since) / max(done - since_done, 1)


class ProgressLine:
    """`label: done/total unit (percent) in elapsed, ETA` on stdout, at most every `period` seconds, and when done
    with the rate.

    `enabled=False` (every process but the first of a multi-host run) counts without printing."""

    def __init__(self, label: str, total: int, unit: str = "examples", period: float = 30.0, enabled: bool = True,
                 clock: Callable[[], float] = time.perf_counter):  # fmt: skip
        self.label, self.total, self.unit = label, total, unit
        self.period, self.enabled, self.clock = period, enabled, clock
        self.start = self.printed = clock()
        self.done = 0
        self.eta = Eta(total)

    def advance(self, count: int) -> None:
        """`count` more units done; prints a line when `period` has passed since the last or all are done."""
        self.done += count
        now = self.clock()
        eta = self.eta.update(self.done, now)
        if self.enabled and (self.done >= self.total or now - self.printed >= self.period):
            self.printed = now
            print(self.line(now, eta), flush=True)

    def line(self, now: float, eta: float | None) -> str:
        elapsed = now - self.start
        head = f"{self.label}: {self.done:,}/{self.total:,} {self.unit}"
        if self.done >= self.total:
            return f"{head} in {elapsed:.1f} s ({self.done / max(elapsed, 1e-9):.1f} {self.unit}/s)"
        percent = 100 * self.done / self.total  # done < total here, so total > 0
        when = "at the next line (the first batch compiled)" if eta is None else f"{eta:.0f} s"
        return f"{head} ({percent:.0f}%) in {elapsed:.0f} s, ETA {when}"


class Heartbeat:
    """`label: still working after N s` every `period` seconds while a library call that reports nothing runs
    (SentencePiece's training: minutes on a real corpus, silent). A context manager; the line comes from a thread,
    which the call must let run (it releases the GIL)."""

    def __init__(self, label: str, period: float = 30.0):
        self.label, self.period = label, max(period, 0.1)  # 0 (a test's "every time") would print flat out
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        start = time.perf_counter()
        while not self._stop.wait(self.period):
            print(f"{self.label}: still working after {time.perf_counter() - start:.0f} s", flush=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
