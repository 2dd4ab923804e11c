"""A lazily started, reused process pool for RDKit work that holds the GIL (InChI, MACCS keys, parsing).

Scoring 3,300 ChEBI-20 pairs takes ~10 s of CPU in RDKit; spreading it over the host's cores keeps
evaluation during training short. Workers start from a `forkserver` (`spawn` where there is none): a fork
of a process that already runs JAX, XLA and TensorFlow threads can deadlock on a lock one of them held.
The pool is started once and reused by every later evaluation; a worker that dies (killed for memory, a
crash in RDKit) is reported, and its work rerun once on a fresh pool, then in this process.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger("textchem_jax.process_pool")

_MIN_ITEMS_PER_WORKER = 64
_pool: concurrent.futures.ProcessPoolExecutor | None = None
_pool_workers = 0


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _get_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    global _pool, _pool_workers
    if _pool is None or _pool_workers != workers:
        shutdown_pool()
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        _pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
        _pool_workers = workers
        atexit.register(shutdown_pool)
    return _pool


def shutdown_pool() -> None:
    """Stops the worker processes (they are restarted on the next parallel call)."""
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=True, cancel_futures=True)
        _pool = None


def start_parallel_map(
    fn: Callable[[T], R], items: Sequence[T], num_workers: int | None = None
) -> Callable[[], list[R]]:
    """Starts `[fn(x) for x in items]` on worker processes; returns a function that collects it.

    The caller can do its own work between the two calls while the workers run. `fn` must be a
    module-level function. `num_workers=1` (or a list too short to pay off) runs in this process, at
    collection time.
    """
    workers = available_cores() if num_workers is None else max(1, num_workers)
    workers = min(workers, len(items) // _MIN_ITEMS_PER_WORKER)
    if workers <= 1:
        return lambda: [fn(item) for item in items]
    chunksize = max(1, len(items) // (workers * 8))

    def submit():
        try:
            return _get_pool(workers).map(fn, items, chunksize=chunksize)
        except concurrent.futures.process.BrokenProcessPool:
            return None

    def gathered(results, rerun_in: str) -> list[R] | None:
        """The pool's results, or None (reported, the pool shut down) when a worker died."""
        try:
            return None if results is None else list(results)
        except concurrent.futures.process.BrokenProcessPool as error:
            logger.warning("a worker process of %s died (%s): rerunning its %d items in %s",
                           getattr(fn, "__name__", fn), error, len(items), rerun_in)  # fmt: skip
            shutdown_pool()  # the next pool starts new workers
            return None

    results = submit()

    def collect() -> list[R]:
        done = gathered(results, "a fresh pool")
        if done is None:
            done = gathered(submit(), "this process")
        return done if done is not None else [fn(item) for item in items]

    return collect
