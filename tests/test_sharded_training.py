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


def _losses(*args: str) -> list[float]:
    result = run_with_devices(WORKER, int(args[0]), *args)  # the worker also sets its device count itself
    return json.loads(result.stdout.strip().splitlines()[-1])["losses"]


def test_one_device_and_eight_devices_with_4x2_mesh_agree():
    single = _losses("1", "1", "1")
    sharded = _losses("8", "4", "2")
    assert single[0] > single[-1]  # it trains
    np.testing.assert_allclose(sharded, single, rtol=0, atol=1e-5)


def test_two_processes_with_two_devices_equal_one_process_with_four():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    coordinator = f"127.0.0.1:{port}"
    workers = [
        subprocess.Popen([sys.executable, str(WORKER), "2", "4", "1", coordinator, "2", str(i)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    multi = json.loads(outputs[0][0].strip().splitlines()[-1])["losses"]
    single_process = _losses("4", "4", "1")
    np.testing.assert_allclose(multi, single_process, rtol=0, atol=1e-5)
