"""The same tiny training on different meshes and process counts gives the same losses."""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from helpers import run_with_devices

pytestmark = pytest.mark.slow  # several tiny trainings, each in its own process

WORKER = pathlib.Path(__file__).with_name("sharded_training_worker.py")


def _result(*args: str) -> dict:
    result = run_with_devices(WORKER, int(args[0]), *args)  # the worker also sets its device count itself
    return json.loads(result.stdout.strip().splitlines()[-1])


def _losses(*args: str) -> list[float]:
    return _result(*args)["losses"]


def _multi_process(processes: int, devices: int, data: int, model: int) -> dict:
    """One run of `processes` processes on 127.0.0.1 (gloo), `devices` CPU devices each, on a (data, model) mesh."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    coordinator = f"127.0.0.1:{port}"
    workers = [
        subprocess.Popen([sys.executable, str(WORKER), str(devices), str(data), str(model), coordinator, str(processes), str(i)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        for i in range(processes)
    ]
    outputs = [w.communicate(timeout=900) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    return json.loads(outputs[0][0].strip().splitlines()[-1])


def test_one_device_and_eight_devices_with_4x2_mesh_agree():
    single = _losses("1", "1", "1")
    sharded = _losses("8", "4", "2")
    assert single[0] > single[-1]  # it trains
    np.testing.assert_allclose(sharded, single, rtol=0, atol=1e-5)


def test_model_axis_spanning_processes_reads_by_data_position():
    """Hosts that share `data` rows feed the same examples, so the global batch depends only on the hosts'
    positions along `data`: a model axis spanning 2 of 4 processes gives the batch of 2 processes with one data
    row each (reading by process index would cut it into 4 shards instead), and both train as one process."""
    spanning_four = _multi_process(4, 2, 2, 4)  # processes 0,1 hold data row 0, processes 2,3 row 1
    one_row_each = _multi_process(2, 2, 2, 2)
    single_process = _result("4", "2", "2")
    assert spanning_four["shard"] == one_row_each["shard"] == [0, 2] and single_process["shard"] == [0, 1]
    assert spanning_four["batch"] == one_row_each["batch"]
    np.testing.assert_allclose(spanning_four["losses"], single_process["losses"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(one_row_each["losses"], single_process["losses"], rtol=0, atol=1e-5)
