"""One process of a 2-process (gloo) `evaluate(checkpoint_steps="all")` of a run's checkpoints, each process with
its own EVAL_OUTPUT_DIR (a host's local disk), for test_multihost_cli. Prints the evaluated steps as JSON.

Usage: python multihost_eval_worker.py COORDINATOR PROCESS_INDEX RUN_DIR OUTPUT_DIR
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

coordinator, index, run_dir, output_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator, 2, index, heartbeat_timeout_seconds=20)

import tasks  # noqa: E402, F401  (registers the demo tasks)
from helpers import LENGTHS, tiny_t5  # noqa: E402
from textchem_jax import evaluate  # noqa: E402
from textchem_jax.run_config import DatasetConfig  # noqa: E402

cfg = DatasetConfig("textchem_demo_forward", LENGTHS, "test", 4, shuffle=False, pack=False, num_examples=4)
results = evaluate.evaluate(model=tiny_t5(), checkpoint_path=run_dir, dataset_cfg=cfg, output_dir=output_dir,
                            checkpoint_steps="all")  # fmt: skip
print(json.dumps(sorted(results)), flush=True)
