"""Started by test_process_pool's Ctrl-C test: maps on the RDKit process pool, then waits for the terminal's Ctrl-C
(a SIGINT to its whole process group) and answers it with one line and status 130, as textchem-train does."""

from __future__ import annotations

import sys
import time

from pool_functions import parent_pid

from textchem_jax import process_pool


def main() -> int:
    try:
        process_pool.start_parallel_map(parent_pid, list(range(256)), num_workers=2)()
        print("ready", flush=True)
        time.sleep(120)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
