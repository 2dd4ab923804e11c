"""Runs a few train steps of a tiny model on fixed batches and prints the losses (for test_sharding_training).

Usage: python sharded_training_worker.py DEVICES MESH_DATA MESH_MODEL [COORDINATOR PROCESS_COUNT PROCESS_INDEX]
Devices are forced CPU devices; with a coordinator, this is one process of a multi-process (gloo) run.
"""

import json
import os
import sys

devices, data, model_parallel = (int(a) for a in sys.argv[1:4])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

if len(sys.argv) > 4:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))

import optax  # noqa: E402

from textchem_jax import partitioning, trainer  # noqa: E402
from textchem_jax.models.adapters import EncoderDecoderModel  # noqa: E402
from textchem_jax.models.config import t5_config  # noqa: E402

GLOBAL_BATCH, INPUTS, TARGETS, VOCAB = 8, 24, 16, 256


def global_batch(step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(step)
    lengths = rng.integers(4, INPUTS, GLOBAL_BATCH)
    inputs = np.where(np.arange(INPUTS) < lengths[:, None], rng.integers(3, VOCAB, (GLOBAL_BATCH, INPUTS)), 0)
    target_lengths = rng.integers(2, TARGETS, GLOBAL_BATCH)
    targets = np.where(np.arange(TARGETS) < target_lengths[:, None], rng.integers(3, VOCAB, (GLOBAL_BATCH, TARGETS)), 0)
    decoder_inputs = np.concatenate([np.zeros((GLOBAL_BATCH, 1), np.int64), targets[:, :-1]], axis=1)
    return {
        "encoder_input_tokens": inputs.astype(np.int32),
        "decoder_input_tokens": decoder_inputs.astype(np.int32),
        "decoder_target_tokens": targets.astype(np.int32),
        "decoder_loss_weights": (targets > 0).astype(np.float32),
    }


def main() -> None:
    mesh = partitioning.make_mesh(mesh_shape=(data, model_parallel))
    model = EncoderDecoderModel(t5_config("tiny", "1.1", vocab_size=VOCAB, dropout_rate=0.0))
    schedule = trainer.learning_rate_schedule("constant", 1e-3)
    run = trainer.Trainer(model, optax.adamw(schedule, weight_decay=0.0), mesh, learning_rate_fn=schedule)
    index, shards = partitioning.host_data_shard(mesh)  # this host's slice: its position along `data`
    rows = GLOBAL_BATCH // shards
    local = lambda batch: {k: v[index * rows : (index + 1) * rows] for k, v in batch.items()}  # noqa: E731
    state = run.init_state(jax.random.key(0))
    losses = []
    for step in range(3):
        state, metrics = run.train_step(state, run.shard_batch(local(global_batch(step))), jax.random.key(1))
        losses.append(float(jax.device_get(metrics["loss"])))
    # The demo mixture's first global batch, as this host's get_dataset shard assembles it on the mesh.
    import hashlib

    from jax.experimental import multihost_utils

    import tasks  # noqa: F401
    from textchem_jax.run_config import DatasetConfig, get_dataset

    cfg = DatasetConfig("textchem_demo", {"inputs": 32, "targets": 32}, "train", GLOBAL_BATCH, shuffle=False)
    first = {k: v.numpy() for k, v in next(iter(get_dataset(cfg, model, mesh=mesh))).items()}
    tokens = run.shard_batch(first)["encoder_input_tokens"]
    gathered = np.asarray(multihost_utils.process_allgather(tokens, tiled=True)) if jax.process_count() > 1 else np.asarray(tokens)
    if jax.process_index() == 0:
        print(json.dumps({"losses": losses, "batch": hashlib.sha1(gathered.tobytes()).hexdigest(), "shard": [index, shards]}))


main()
