"""Honest MFU: the analytic model FLOPs of a T5 step, against a hand count and against XLA's own count."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from textchem_jax.models import flops
from textchem_jax.models.config import t5_config
from textchem_jax.trainer import PEAK_FLOPS, measure_matmul_peak, peak_flops, run_peak_flops


def test_hand_count_of_a_packed_batch():
    config = t5_config("tiny", "1.1", vocab_size=16, d_model=4, d_kv=2, num_heads=2, d_ff=8, num_encoder_layers=1,
                       num_decoder_layers=1)  # fmt: skip
    # Row 0 packs two examples (encoder 3 + 2 tokens, decoder 2 + 1), row 1 holds one (4 and 3) and padding.
    batch = {
        "encoder_input_tokens": np.array([[5, 6, 7, 8, 9, 0], [5, 6, 7, 8, 0, 0]]),
        "encoder_segment_ids": np.array([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 0, 0]]),
        "decoder_target_tokens": np.array([[5, 1, 6, 0], [5, 6, 1, 0]]),
        "decoder_segment_ids": np.array([[1, 1, 2, 0], [1, 1, 1, 0]]),
    }
    np.testing.assert_array_equal(flops.segment_lengths(batch["encoder_input_tokens"], batch["encoder_segment_ids"]),
                                  [[3, 2], [4, 0]])  # fmt: skip
    # By hand, d=4, inner=4, d_ff=8 (gated: 3 matrices), vocab 16; 9 encoder and 6 decoder tokens.
    encoder = 2 * (4 * 4 * 4 + 3 * 4 * 8) * 9 + 4 * 4 * (9 + 4 + 16)  # projections + MLP, then scores over 3², 2², 4²
    decoder = (2 * (6 * 4 * 4 + 3 * 4 * 8) * 6  # self q,k,v,o + cross q,o + MLP
               + 2 * 2 * 4 * 4 * 9  # cross keys and values of the 9 encoder outputs
               + 4 * 4 * (4 + 1 + 9)  # self-attention over 2², 1², 3²
               + 4 * 4 * (3 * 2 + 2 * 1 + 4 * 3))  # cross-attention: decoder x encoder length per example
    logits = 2 * 4 * 16 * 6
    assert flops.train_step_flops(config, batch) == 3 * (encoder + decoder + logits)


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_forward_count_matches_xla_on_a_full_batch(version):
    """On an unpadded, unpacked batch XLA executes the same matmuls plus elementwise work (norms, softmax,
    activations, position biases): O(d) per token against O(d^2), here under 5% of the total."""
    from helpers import tiny_t5

    model = tiny_t5(version, vocab_size=512, d_model=256, d_kv=64, num_heads=4, d_ff=1024)
    rng = np.random.default_rng(0)
    batch = {"encoder_input_tokens": rng.integers(2, 500, (4, 64)).astype(np.int32),
             "decoder_input_tokens": rng.integers(2, 500, (4, 32)).astype(np.int32)}  # fmt: skip
    batch["decoder_target_tokens"] = batch["decoder_input_tokens"]
    params = model.init(jax.random.key(0))
    analysis = jax.jit(lambda p, b: model.logits(p, b)).lower(params, batch).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    ours = flops.train_step_flops(model.config, batch) / 3
    assert 0.95 < ours / float(analysis["flops"]) <= 1.0


def test_peak_comes_from_the_data_sheet_or_a_measured_matmul():
    class Device:
        device_kind = "TPU v5 lite"

    assert peak_flops("bfloat16", Device()) == (197e12, "TPU v5 lite bfloat16 data sheet")
    Device.device_kind = "NVIDIA H200"
    assert peak_flops("bfloat16", Device())[0] == 989e12
    assert all(set(peaks) == {"bfloat16", "float32"} for _, peaks in PEAK_FLOPS)
    measured, source = peak_flops("float32")  # this machine: a CPU, no data sheet
    assert source.startswith("measured float32 matmul") and measured > 1e8


def test_the_runs_peak_counts_each_accelerator_but_a_hosts_cpu_once_per_process():
    """MFU's denominator. 8 simulated CPU devices share one host's cores: the measured peak counted 8 times made
    MFU read 3.0% where 1 device read 12.5%. A CPU counts its measured peak once per process; accelerators count
    their data sheet's peak per chip."""

    class Device:
        def __init__(self, platform, device_kind, process_index=0):
            self.platform, self.device_kind, self.process_index = platform, device_kind, process_index

    host = measure_matmul_peak("float32")  # once per process (cached): the same figure every call below
    one_cpu, source = run_peak_flops("float32", [Device("cpu", "cpu")])
    assert one_cpu == host and "once per process (1)" in source
    assert run_peak_flops("float32", [Device("cpu", "cpu") for _ in range(8)])[0] == host
    two_hosts = [Device("cpu", "cpu", process) for process in (0, 1) for _ in range(4)]
    assert run_peak_flops("float32", two_hosts)[0] == 2 * host
    assert run_peak_flops("float32", jax.devices())[0] == host  # this process's real devices, however many
    tpus, source = run_peak_flops("bfloat16", [Device("tpu", "TPU v5 lite", i // 4) for i in range(8)])
    assert tpus == 8 * 197e12 and source == "TPU v5 lite bfloat16 data sheet, x 8 devices"
    assert run_peak_flops("float32", [Device("gpu", "NVIDIA H100 80GB HBM3")] * 2)[0] == 2 * 494.5e12


def test_a_bfloat16_peak_measured_on_a_cpu_is_never_below_its_float32_peak():
    """XLA's CPU bfloat16 dot runs slower than its float32 one, so measured alone it made a bfloat16 step's
    MFU read 131%: bfloat16 work can always run as float32, and the float32 rate bounds its peak from below."""
    measured, source = peak_flops("bfloat16")
    assert measured >= measure_matmul_peak("float32")
    assert source.startswith("measured bfloat16 matmul (or float32's, if faster)")


def test_hardware_flops_of_the_step_need_only_the_batch_shapes():
    """HFU's count lowers the train step on zeros shaped like the dataset's batches (so a run reads its data
    once): the same count as on a real batch; batch shapes that are not static give no count, not an error."""
    import optax
    import tensorflow as tf
    from helpers import LENGTHS, tiny_t5

    from textchem_jax import partitioning, trainer
    from textchem_jax import train as train_lib
    from textchem_jax.run_config import DatasetConfig, get_dataset

    model = tiny_t5()
    run = trainer.Trainer(model, optax.adamw(1e-3), partitioning.make_mesh())
    state, rng = run.init_state(jax.random.key(0)), jax.random.key(1)
    dataset = get_dataset(DatasetConfig("textchem_demo_forward", LENGTHS, "train", 4), model)
    on_data = train_lib._lowered_flops(run, state, train_lib._numpy(next(iter(dataset))), rng)
    counted = train_lib._step_flops(run, state, dataset.element_spec, rng)
    assert on_data is not None and on_data > 0 and counted == on_data
    unknown = {key: tf.TensorSpec([None, *spec.shape[1:]], spec.dtype) for key, spec in dataset.element_spec.items()}
    assert train_lib._step_flops(run, state, unknown, rng) is None
