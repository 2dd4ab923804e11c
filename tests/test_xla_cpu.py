"""What XLA's CPU backend makes of our model: the memory of its buffers under our flags
(`xla_cpu.apply_cpu_flags`), and the dots of the gradients of our dense layers."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest
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


@pytest.mark.parametrize("layer", ["projection", "tied_logits"])
def test_weight_gradients_are_one_dot_over_the_rows_without_a_transposed_copy(layer):
    """`layers.rows_dot`: with (batch, length) kept apart, XLA copied the gradient to (features, batch, length)
    before the weight's gradient dot (131 MB at T5-small's logits); over merged rows the dot reads it as it lies."""
    import jax
    import jax.numpy as jnp

    from textchem_jax.models import layers

    rows, width, features = (4, 16), 64, 1000
    if layer == "projection":
        module, method = layers.Projection(features, ("embed", "mlp"), 1.0, jnp.float32, jnp.float32), None
    else:
        module = layers.TokenEmbedding(vocab_size=features, features=width, dtype=jnp.float32, param_dtype=jnp.float32)
        method = module.attend
    x = jnp.ones((*rows, width))
    params = module.init(jax.random.key(0), x, method=method)
    loss = lambda params, x: jnp.sum(jnp.sin(module.apply(params, x, method=method)))  # noqa: E731
    hlo = jax.jit(jax.grad(loss)).lower(params, x).compile().as_text()
    gradient_size = math.prod(rows) * features
    moved = [line.strip()[:200] for line in hlo.splitlines()
             if re.search(r"= \w+\[[\d,]*\]\S* (transpose|copy)\(", line) and _elements(line) == gradient_size]  # fmt: skip
    assert "dot(" in hlo and not moved, moved


def _elements(instruction: str) -> int:
    shape = re.search(r"= \w+\[([\d,]*)\]", instruction)
    return math.prod(int(n) for n in shape.group(1).split(",") if n) if shape else 0


def test_decoders_compile_without_split_reductions_on_cpu_and_decode_the_same(monkeypatch):
    """`xla_cpu.decode_compiler_options`, as `make_batch_decoder` applies them: no reduce-windows left in a
    compiled beam search, and the same beams and scores as the search compiled with XLA's split; no options
    for other backends, nor when the user's XLA_FLAGS disable passes of their own."""
    import functools

    import flax.linen as nn
    import jax
    import numpy as np
    from helpers import tiny_t5

    from textchem_jax import partitioning, xla_cpu
    from textchem_jax.evaluator import make_batch_decoder
    from textchem_jax.models.beam_search import beam_search

    model = tiny_t5("1.0", vocab_size=1000)  # log-softmax over 1,000 logits: a reduction XLA splits
    params = jax.tree_util.tree_map(np.asarray, nn.meta.unbox(model.init(jax.random.key(0))))
    tokens = np.random.default_rng(0).integers(2, 1000, (4, 9)).astype(np.int32)
    decode_fn = functools.partial(beam_search, num_decodes=4, length_penalty=1.0)

    def search(params, tokens):
        return model.predict_batch(params, {"encoder_input_tokens": tokens}, decode_fn=decode_fn, max_decode_length=12)

    options = xla_cpu.decode_compiler_options(jax.default_backend())
    assert options == {"xla_disable_hlo_passes": "tree_reduction_rewriter"}
    split = jax.jit(search).lower(params, tokens).compile()
    unsplit = jax.jit(search, compiler_options=options).lower(params, tokens).compile()
    assert "reduce-window(" in split.as_text() and "reduce-window(" not in unsplit.as_text()

    def decode(mesh=partitioning.make_mesh()):
        return make_batch_decoder(model, mesh, decode_fn, 12, batch_size=4)(params, {"encoder_input_tokens": tokens})

    sequences, scores = decode()
    expected_sequences, expected_scores = split(params, tokens)
    np.testing.assert_array_equal(sequences, np.asarray(expected_sequences))
    np.testing.assert_allclose(scores, np.asarray(expected_scores), rtol=1e-5)
    with monkeypatch.context() as patch:  # the options reach the decoder's compilation
        patch.setattr(xla_cpu, "decode_compiler_options", lambda platform: {f"xla_no_such_option_on_{platform}": "1"})
        with pytest.raises(Exception, match="xla_no_such_option_on_cpu"):
            decode()

    assert xla_cpu.decode_compiler_options("gpu") == {} and xla_cpu.decode_compiler_options("tpu") == {}
    monkeypatch.setenv("XLA_FLAGS", "--xla_disable_hlo_passes=algsimp")
    assert xla_cpu.decode_compiler_options("cpu") == {}
