"""Our XLA CPU flags (`xla_cpu.apply_cpu_flags`), checked where they matter: the memory of XLA's buffers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from helpers import ROOT

INIT_BUFFERS = """
from textchem_jax import xla_cpu
xla_cpu.apply_cpu_flags()
import json, flax.linen as nn, jax
from textchem_jax.models.adapters import EncoderDecoderModel
from textchem_jax.models.config import t5_config
model = EncoderDecoderModel(t5_config("small", "1.0", vocab_size=32128, dropout_rate=0.0))
memory = jax.jit(lambda key: nn.meta.unbox(model.init(key))).lower(jax.random.key(0)).compile().memory_analysis()
print(json.dumps({"params": memory.output_size_in_bytes, "temporaries": memory.temp_size_in_bytes}))
"""


def test_initialising_t5_small_needs_temporaries_of_less_than_twice_its_parameters():
    """With YNNPACK's elementwise fusions each op of the initialisers' random sampling wrote its own buffer:
    3.3 GiB of temporaries for T5-small's 231 MiB of parameters (4.2 GiB peak RSS, above the train step's)."""
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}  # the flags our entry points set
    done = subprocess.run([sys.executable, "-c", INIT_BUFFERS], capture_output=True, text=True, timeout=300,
                          env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"}, cwd=ROOT, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    sizes = json.loads(done.stdout.splitlines()[-1])
    assert sizes["params"] > 4 * 60e6  # T5-small v1.0 (60.5 M parameters), float32
    assert sizes["temporaries"] < 2 * sizes["params"], sizes
