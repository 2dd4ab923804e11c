"""Started by test_process_pool's Ctrl-C test: maps on the RDKit process pool, then waits for the terminal's Ctrl-C
(a SIGINT to its whole process group) and answers it with one line and status 130, as textchem-train does.

  python tests/ctrl_c_pool_worker.py started    # interrupted once the pool's workers run
  python tests/ctrl_c_pool_worker.py importing  # interrupted while the forkserver imports this script again

With `importing`, the forkserver's import of this script (as `__mp_main__`) takes SLOW_IMPORT_S seconds: the
moment textchem-train's forkserver spends importing JAX and TensorFlow before its first worker starts.
"""

from __future__ import annotations

import os
import sys
import time

from pool_functions import parent_pid

from textchem_jax import process_pool

SLOW_IMPORT_S = 4.0

if __name__ == "__mp_main__" and os.environ.get("CTRL_C_POOL_WORKER_MOMENT") == "importing":
    time.sleep(SLOW_IMPORT_S)


def main(moment: str) -> int:
    os.environ["CTRL_C_POOL_WORKER_MOMENT"] = moment  # the forkserver inherits it
    try:
        if moment == "importing":
            print("ready", flush=True)
        process_pool.start_parallel_map(parent_pid, list(range(256)), num_workers=2)()
        print("ready", flush=True)
        time.sleep(120)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
