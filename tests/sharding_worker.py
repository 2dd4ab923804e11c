"""Partitioning on 8 forced CPU devices: prints one `REPORT {json}` line for test_sharding.py.

Usage: python sharding_worker.py
It reports the mesh shapes make_mesh builds, the sharding of every parameter that sharded_init creates
(against the logical axis rules), and the largest difference between a sharded and a single-device forward pass.
"""

import json
import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from textchem_jax import partitioning  # noqa: E402
from textchem_jax.models import t5  # noqa: E402
from textchem_jax.models.config import t5_config  # noqa: E402

CONFIGS = {"v1.1": t5_config("tiny", "1.1"), "v1.0-scan": t5_config("tiny", "1.0", scan_layers=True)}


def mesh_report() -> dict:
    report = {
        "mesh": dict(partitioning.make_mesh(num_partitions=2).shape),
        "mesh_8": dict(partitioning.make_mesh(num_partitions=8).shape),
        "mesh_2x4": dict(partitioning.make_mesh(mesh_shape=(2, 4)).shape),
    }
    try:
        partitioning.make_mesh(num_partitions=3)
        report["bad_partitions_error"] = None
    except ValueError as error:
        report["bad_partitions_error"] = str(error)
    return report


def batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    encoder = rng.integers(2, 512, size=(8, 10)).astype(np.int32)
    encoder[:, 7:] = 0
    targets = rng.integers(2, 512, size=(8, 6)).astype(np.int32)
    targets[::2, 4:] = 0
    decoder_inputs = np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
    return encoder, decoder_inputs, targets


def model_report(config, mesh, rules) -> dict:
    """Parameter shardings against the rules, and the sharded forward pass against the single-device one."""
    model = t5.T5(config)

    def init(key):
        return t5.init_params(config, key)

    params, _ = partitioning.sharded_init(init, jax.random.key(0), mesh=mesh)
    boxed = jax.eval_shape(init, jax.random.key(0))
    leaves = jax.tree_util.tree_flatten_with_path(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
    actual = {jax.tree_util.keystr(p): a for p, a in jax.tree_util.tree_flatten_with_path(params)[0]}
    mismatches, specs = [], {}
    for path, box in leaves:
        key = jax.tree_util.keystr(path)
        expected = nn.logical_to_mesh_axes(box.names, rules)
        sharding = actual[key].sharding
        if not isinstance(sharding, NamedSharding) or sharding.spec != expected or sharding.mesh != mesh:
            mismatches.append((key, str(sharding), str(expected)))
        specs[key] = list(sharding.spec)
    report = {"mismatches": mismatches, "specs": specs, "count": len(leaves)}

    encoder, decoder_inputs, targets = batch()
    batch_sharding = NamedSharding(mesh, P("data", None))
    with partitioning.activate(mesh, rules):
        inputs = [jax.device_put(x, batch_sharding) for x in (encoder, decoder_inputs, targets)]
        sharded_logits = jax.jit(model.apply)({"params": params}, *inputs)
    report["logits_spec"] = list(sharded_logits.sharding.spec)
    single = jax.tree_util.tree_map(lambda x: jax.device_put(np.asarray(x), jax.devices()[0]), params)
    reference = jax.jit(model.apply)({"params": single}, encoder, decoder_inputs, targets)
    report["max_difference"] = float(np.abs(np.asarray(sharded_logits) - np.asarray(reference)).max())
    return report


def main() -> None:
    assert jax.device_count() == 8, jax.devices()
    report = mesh_report()
    mesh = partitioning.make_mesh(num_partitions=2)
    rules = partitioning.standard_logical_axis_rules()
    for name, config in CONFIGS.items():
        report[name] = model_report(config, mesh, rules)
    print("REPORT " + json.dumps(report))


if __name__ == "__main__":
    main()
