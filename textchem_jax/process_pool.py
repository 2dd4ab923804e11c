"""A lazily started, reused process pool for RDKit work that holds the GIL (InChI, MACCS keys, parsing).

Scoring 3,300 ChEBI-20 pairs takes ~10 s of CPU in RDKit; spreading it over the host's cores keeps
evaluation during training short. Workers start from a `forkserver` (`spawn` where there is none): a fork
of a process that already runs JAX, XLA and TensorFlow threads can deadlock on a lock one of them held.
The pool is started once and reused by every later evaluation; a worker that dies (killed for memory, a
crash in RDKit) is reported, and its work rerun once on a fresh pool, then in this process. Several threads may
map at once; a call that asks for another number of workers replaces the pool without cancelling their work.
A Ctrl-C is this process's to handle: the workers ignore it (`_ignore_interrupts`).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import functools
import logging
import multiprocessing
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger("textchem_jax.process_pool")

_MIN_ITEMS_PER_WORKER = 64
_pool: concurrent.futures.ProcessPoolExecutor | None = None
_pool_workers = 0
_lock = threading.Lock()  # guards _pool and _pool_workers


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_warned_scripts: set[str] = set()  # the scripts already warned of
_MAIN_GUARD = re.compile(r"""__name__\s*==\s*['"]__main__['"]|['"]__main__['"]\s*==\s*__name__""")


@functools.cache
def _script_problem(path: str) -> str | None:
    """Why worker processes cannot run the main script again and what to do, or None."""
    try:
        with open(path, "rb") as f:  # local only: the running script's source
            source = f.read()
    except OSError:
        return None  # not a readable source file (a frozen program): workers will say what fails
    try:
        compile(source, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return ("is not Python source (IPython magics?), and worker processes run the script again; make it a .py "
                'file with its work under `if __name__ == "__main__":`')  # fmt: skip
    if _MAIN_GUARD.search(source.decode("utf-8", errors="replace")) is None:
        return ('has no `if __name__ == "__main__":` guard, which worker processes need (they import the script '
                "again); put the script's work under that guard")  # fmt: skip
    return None


def _main_file_rerun_by_workers() -> str | None:
    """The file `forkserver` and `spawn` workers run before their work, as multiprocessing's `spawn.prepare` picks
    it: the module of `python -m module`; without `__spec__`, any `__main__.__file__` (`runpy.run_path`), whatever
    its suffix (a `#!` script named `score_run`, `ipython cells.ipy`); none for `python -m package` or a zipapp."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None and (name == "__main__" or name.endswith(".__main__")):
        return None
    return getattr(main, "__file__", None)


def main_script_unguarded() -> str | None:
    """The running script when worker processes would run it again unguarded (or cannot run it), else None.

    `forkserver` and `spawn` workers run the main script (`python script.py`, `./script`, `python -m module`,
    `ipython cells.ipy`) before their work; one that calls us at its top level, without `if __name__ ==
    "__main__":`, would start workers from each worker: Python stops them ("bootstrapping phase"), with pages
    of tracebacks, and the script's other top-level work is done again in each (a `#!` script named without
    `.py` ran its top level 5 times and printed 242 lines of tracebacks). One that is not Python source kills
    every worker. Such a script's work runs in its own process."""
    path = _main_file_rerun_by_workers()
    problem = None if path is None else _script_problem(path)
    if problem is None:
        return None
    if path not in _warned_scripts:
        _warned_scripts.add(path)
        logger.warning("%s %s to use all %d cores: RDKit work runs in this process, on one core",
                       path, problem, available_cores())  # fmt: skip
    return path


def _apply_to_chunk(fn: Callable[[T], R], chunk: Sequence[T]) -> list[R]:
    return [fn(item) for item in chunk]


def _ignore_interrupts() -> None:
    """Each worker's start: a terminal's Ctrl-C reaches the whole process group, and each worker printed a
    KeyboardInterrupt traceback under textchem-train's one line (2 workers: 38 lines, "Process ForkServerProcess-2:
    Traceback"). This process handles it (StartedMap cancels what no worker started); a chunk a worker runs
    finishes. A worker still starting (importing the main script) has no handler yet: its traceback remains."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _submit(fn: Callable[[T], R], items: Sequence[T], pool_size: int, chunksize: int):
    """`(pool, futures)`: one future per chunk, or the `BrokenProcessPool` error when a worker had died before or
    during the submission. Chosen and used under the lock: no other thread can retire the pool in between
    (seqio's evaluator scores each task on its own thread)."""
    global _pool, _pool_workers
    with _lock:
        if _pool is not None and _pool_workers != pool_size:
            _pool.shutdown(wait=False)  # what other threads submitted to it still runs; they wait for it
            _pool = None
        if _pool is None:
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            _pool = concurrent.futures.ProcessPoolExecutor(pool_size, mp_context=multiprocessing.get_context(method),
                                                        initializer=_ignore_interrupts)  # fmt: skip
            _pool_workers = pool_size
        futures = []
        try:
            for start in range(0, len(items), chunksize):
                futures.append(_pool.submit(_apply_to_chunk, fn, items[start:start + chunksize]))
        except concurrent.futures.process.BrokenProcessPool as error:  # e.g. killed for memory since the last map
            return _pool, error
        except BaseException:  # a Ctrl-C in the submission: no StartedMap holds these yet (all 16 chunks ran on,
            for future in futures:  # and the next map waited behind them)
                future.cancel()
            raise
        return _pool, futures


def _retire(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Drops a pool one of whose workers died, unless another thread has already replaced it."""
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False)


def shutdown_pool() -> None:
    """Stops the worker processes, cancelling work not started (they are restarted on the next parallel call)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown_pool)  # once, not at each pool's start: a no-op when no pool runs


class StartedMap:
    """`[fn(x) for x in items]` running on worker processes: call it to collect the results.

    Used as a context manager around the caller's own work, it cancels the chunks not yet started when that
    work raises (not on a clean exit: the results may be collected after the block): a Ctrl-C in text2mol's BLEU left every chunk of its map queued (496-512 of 512 items ran after
    it, and the next metric call waited behind them; now 64-125). Collecting cancels them too when interrupted.
    Chunks a worker already runs finish (stopping a worker breaks the pool for every other thread's map)."""

    def __init__(self, fn: Callable[[T], R], items: Sequence[T], pool_size: int, chunksize: int,
                 in_this_process: bool):  # fmt: skip
        self._fn, self._items, self._pool_size, self._chunksize = fn, items, pool_size, chunksize
        self._submitted = None if in_this_process else _submit(fn, items, pool_size, chunksize)

    def _gathered(self, rerun_in: str) -> list[R] | None:
        """The pool's results, or None (reported, the pool retired) when a worker died."""
        pool, futures = self._submitted
        try:
            if isinstance(futures, concurrent.futures.process.BrokenProcessPool):
                raise futures  # reported like a death while collecting
            return [result for future in futures for result in future.result()]
        except concurrent.futures.process.BrokenProcessPool as error:
            logger.warning("a worker process of %s died (%s): rerunning its %d items in %s",
                           getattr(self._fn, "__name__", self._fn), error, len(self._items), rerun_in)  # fmt: skip
        except BaseException:
            self.cancel()
            raise
        _retire(pool)  # the next pool starts new workers
        return None

    def cancel(self) -> None:
        """Cancels the chunks no worker has started (a no-op once collected)."""
        futures = None if self._submitted is None else self._submitted[1]
        for future in futures if isinstance(futures, list) else ():
            future.cancel()

    def __call__(self) -> list[R]:
        if self._submitted is None:  # run here, at collection time
            return [self._fn(item) for item in self._items]
        done = self._gathered("a fresh pool")
        if done is None:
            self._submitted = _submit(self._fn, self._items, self._pool_size, self._chunksize)
            done = self._gathered("this process")
        return done if done is not None else [self._fn(item) for item in self._items]

    def __enter__(self) -> StartedMap:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        if exc_type is not None:  # the caller's work raised: its results will not be collected
            self.cancel()


def start_parallel_map(fn: Callable[[T], R], items: Sequence[T], num_workers: int | None = None) -> StartedMap:
    """Starts `[fn(x) for x in items]` on worker processes; returns a function that collects it.

    The caller can do its own work between the two calls while the workers run, inside `with` (StartedMap).
    `fn` must be a module-level function. `num_workers=1` (or a list too short to pay off) runs in this
    process, at collection time.
    """
    pool_size = available_cores() if num_workers is None else max(1, num_workers)
    workers = min(pool_size, len(items) // _MIN_ITEMS_PER_WORKER)  # the pool starts workers as chunks need them
    in_this_process = workers <= 1 or main_script_unguarded() is not None
    return StartedMap(fn, items, pool_size, max(1, len(items) // (max(workers, 1) * 8)), in_this_process)

