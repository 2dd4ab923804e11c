"""The same tiny training on different meshes and process counts gives the same losses."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from gcs_emulator import free_port
from helpers import run_with_devices

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("sharded_training")]  # tiny trainings in processes;
# one worker runs the module, so the 8-device reference run is made once

WORKER = pathlib.Path(__file__).with_name("sharded_training_worker.py")


def _result(*args: str) -> dict:
    result = run_with_devices(WORKER, int(args[0]), *args)  # the worker also sets its device count itself
    return json.loads(result.stdout.strip().splitlines()[-1])


def _losses(*args: str) -> list[float]:
    return _result(*args)["losses"]


def _multi_process(processes: int, devices: int, data: int, model: int) -> dict:
    """One run of `processes` processes on 127.0.0.1 (gloo), `devices` CPU devices each, on a (data, model) mesh."""
    port = free_port()
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


@pytest.fixture(scope="module")
def eight_devices() -> dict:
    """One process with 8 devices on a 4x2 (data, model) mesh: the reference the other layouts must equal."""
    return _result("8", "4", "2")


def test_one_device_and_eight_devices_with_4x2_mesh_agree(eight_devices):
    single = _losses("1", "1", "1")
    assert single[0] > single[-1]  # it trains
    np.testing.assert_allclose(eight_devices["losses"], single, rtol=0, atol=1e-5)


def test_model_axis_spanning_processes_reads_by_data_position(eight_devices):
    """Hosts that share `data` rows feed the same examples: with the model axis spanning both processes
    (one data row), each reads the whole global batch, which is the one-process batch (reading by process
    index would cut it in two shards instead), and both train as one process."""
    spanning_two = _multi_process(2, 2, 1, 4)
    assert spanning_two["shard"] == eight_devices["shard"] == [0, 1]
    assert spanning_two["batch"] == eight_devices["batch"]
    np.testing.assert_allclose(spanning_two["losses"], eight_devices["losses"], rtol=0, atol=1e-5)
