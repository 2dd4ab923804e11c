"""Functions the process pool tests map, in a module of their own: a worker imports only this, not the test
module with its JAX, Flax and task imports (about 9 s a pool start)."""

from __future__ import annotations

import os


def parent_pid(_) -> int:
    return os.getppid()


def own_pid(_) -> int:
    return os.getpid()


def square_or_die_once(item: tuple[int, str]) -> int:
    """Kills its worker the first time it meets item 7 (a marker file says whether that happened)."""
    value, marker = item
    if value == 7 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return value * value


def slowly_noted(item: tuple[int, str]) -> int:
    """Takes 20 ms and leaves a file named after its item in the given folder: which items the workers ran."""
    import time

    value, folder = item
    time.sleep(0.02)
    open(os.path.join(folder, str(value)), "w").close()
    return value
