"""Partitioning: rules, meshes that honour num_partitions on CPU, parameters created in their shards,
and a sharded forward pass equal to the single-device one (8 forced host devices in a subprocess)."""

from __future__ import annotations

import json
import pathlib
import types

import jax
import numpy as np
import pytest
from helpers import run_with_devices
from jax.sharding import PartitionSpec as P

from textchem_jax import partitioning
from textchem_jax.models import t5
from textchem_jax.models.config import t5_config

WORKER = pathlib.Path(__file__).with_name("sharding_worker.py")
pytestmark = pytest.mark.xdist_group("sharding")  # one worker: the 8-device report is made once


@pytest.fixture(scope="module")
def multi_device_report() -> dict:
    done = run_with_devices(WORKER, 8, timeout=300)
    line = next(line for line in done.stdout.splitlines() if line.startswith("REPORT "))
    return json.loads(line[len("REPORT ") :])


@pytest.mark.slow
def test_meshes_honour_num_partitions_on_cpu(multi_device_report):
    assert multi_device_report["mesh"] == {"data": 4, "model": 2}
    assert multi_device_report["mesh_8"] == {"data": 1, "model": 8}
    assert multi_device_report["mesh_2x4"] == {"data": 2, "model": 4}
    assert "does not divide" in multi_device_report["bad_partitions_error"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["v1.1", "v1.0-scan"])
def test_parameters_are_created_in_their_logical_shards(multi_device_report, name):
    report = multi_device_report[name]
    assert report["count"] > 20 and report["mismatches"] == []
    specs = report["specs"]
    assert specs["['token_embedder']['embedding']"] == ["model", None]
    if name == "v1.1":
        assert specs["['encoder']['layers_0']['attention']['query']['kernel']"] == [None, "model"]
        assert specs["['encoder']['layers_0']['attention']['out']['kernel']"] == ["model", None]
        assert specs["['decoder']['layers_1']['mlp']['wi_0']['kernel']"] == [None, "model"]
        assert specs["['decoder']['layers_1']['mlp']['wo']['kernel']"] == ["model", None]
        assert specs["['decoder']['relpos_bias']['rel_embedding']"] == [None, "model"]
        assert specs["['decoder']['logits_dense']['kernel']"] == [None, "model"]
        assert specs["['encoder']['encoder_norm']['scale']"] == [None]
    else:  # stacked layers: a leading, unsharded `layers` axis
        assert specs["['encoder']['layers']['attention']['query']['kernel']"] == [None, None, "model"]
        assert specs["['decoder']['layers']['mlp']['wo']['kernel']"] == [None, "model", None]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["v1.1", "v1.0-scan"])
def test_sharded_forward_equals_single_device(multi_device_report, name):
    report = multi_device_report[name]
    assert report["max_difference"] < 1e-4
    assert report["logits_spec"][0] == "data"  # the batch stays split over the data axis


def test_rules_map_logical_axes_like_t5x():
    rules = dict(partitioning.standard_logical_axis_rules())
    assert rules["batch"] == "data"
    assert all(rules[axis] == "model" for axis in ("vocab", "mlp", "heads", "joined_kv"))
    assert all(rules[axis] is None for axis in ("embed", "kv", "length", "relpos_buckets", "layers"))


def test_single_device_mesh_and_shardings():
    mesh = partitioning.make_mesh()
    assert dict(mesh.shape) == {"data": jax.device_count(), "model": 1}
    with pytest.raises(ValueError):
        partitioning.make_mesh(mesh_shape=(3, 5))
    boxed = jax.eval_shape(lambda: t5.init_params(t5_config("tiny", "1.0"), jax.random.key(0)))
    shardings = partitioning.param_shardings(mesh, boxed)
    assert shardings["token_embedder"]["embedding"].spec == P("model", None)
    assert shardings["decoder"]["layers_0"]["self_attention"]["query"]["kernel"].spec == P(None, "model")


@pytest.mark.parametrize("partitions", [0, -2])
def test_num_partitions_below_one_is_said_as_the_user_set_it(partitions):
    """NUM_PARTITIONS=0 was read as 1 and then reported as "mesh_shape (8, 1) disagrees with num_partitions=0",
    a mesh shape nobody had set."""
    with pytest.raises(ValueError, match=rf"NUM_PARTITIONS={partitions} \(num_partitions\): give a whole number >= 1") as error:
        partitioning.make_mesh(num_partitions=partitions)
    assert "mesh_shape" not in str(error.value)


def test_describe_params_lists_every_parameter():
    config = t5_config("tiny", "1.1", scan_layers=True)
    boxed = jax.eval_shape(lambda: t5.init_params(config, jax.random.key(0)))
    text = partitioning.describe_params(boxed)
    lines = text.strip().splitlines()
    assert len(lines) == len(jax.tree_util.tree_leaves(boxed)) + 1
    embedding = next(line for line in lines if "token_embedder/embedding" in line)
    assert "(vocab=512, embed=64)" in embedding and "PartitionSpec('model', None)" in embedding
    query = next(line for line in lines if "encoder/layers/attention/query/kernel" in line)
    assert "(layers=2, embed=64, joined_kv=64)" in query and "PartitionSpec(None, None, 'model')" in query
    assert lines[-1] == f"Total number of parameters: {t5.count_params(boxed):,}"


@pytest.mark.parametrize(
    ("mesh_shape", "devices_per_process", "expected"),
    [
        ((2, 4), 2, [(0, 2), (0, 2), (1, 2), (1, 2)]),  # the model axis spans processes 0,1 and 2,3: two data rows
        ((1, 4), 2, [(0, 1), (0, 1)]),  # one data row spread over both processes: both read the whole batch
        ((4, 1), 2, [(0, 2), (1, 2)]),  # two rows per process: one shard each
        ((2, 2), 2, [(0, 2), (1, 2)]),  # one row per process: the process index
    ],
)
def test_a_hosts_data_shard_is_its_position_along_the_data_axis(monkeypatch, mesh_shape, devices_per_process, expected):
    """`host_data_shard` on meshes of fake devices (only their `process_index` matters), laid out as
    `jax.make_mesh` lays out real ones: processes' devices in order, row by row."""
    count = mesh_shape[0] * mesh_shape[1]
    devices = [types.SimpleNamespace(process_index=i // devices_per_process) for i in range(count)]
    mesh = types.SimpleNamespace(shape={"data": mesh_shape[0], "model": mesh_shape[1]},
                                 devices=np.array(devices, dtype=object).reshape(mesh_shape))  # fmt: skip
    seen = []
    for process in range(count // devices_per_process):
        monkeypatch.setattr(jax, "process_index", lambda process=process: process)
        seen.append(partitioning.host_data_shard(mesh))
    assert seen == expected


def test_a_host_whose_rows_are_not_one_aligned_block_is_refused(monkeypatch):
    # process 0 holds rows 0 and 2 of 3: not a contiguous block of the same size as the others'
    layout = [[0], [1], [0]]
    devices = np.array([[types.SimpleNamespace(process_index=p) for p in row] for row in layout], dtype=object)
    mesh = types.SimpleNamespace(shape={"data": 3, "model": 1}, devices=devices)
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    with pytest.raises(ValueError, match=r"holds data rows \[0, 2\] of 3"):
        partitioning.host_data_shard(mesh)
    monkeypatch.setattr(jax, "process_index", lambda: 2)
    with pytest.raises(ValueError, match="has no device"):
        partitioning.host_data_shard(mesh)
