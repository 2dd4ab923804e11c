"""Train-step throughput on T5-small shape: ours (JAX, jitted) vs T5X vs Hugging Face PyTorch T5, same machine.

Batch 8, inputs 256, targets 128, AdamW (lr 6e-4, optax for the JAX peers, torch.optim for HF), float32,
random weights (v1.0 small, 32,128 vocab), no dropout, no z-loss or label smoothing. `--size`, `--batch`,
`--inputs`, `--targets` and `--dtype` change that for every peer alike (bfloat16: activations in bfloat16,
parameters and optimizer in float32, as T5X's `dtype` and torch's autocast do); on a GPU, HF runs on CUDA.
The implementations alternate in one script, each timed over the same number of steps after warm-up; tokens/s
counts input + target tokens. MFU divides the model FLOPs of a step (`textchem_jax.models.flops`, counted from
the shapes: the same count for every peer) by the device's peak (`trainer.peak_flops`: a data sheet's on GPUs
and TPUs; on CPUs the faster of JAX's and torch's matmul measured here); ours also gets HFU, XLA's executed
FLOPs of its compiled step over the same peak. Targets: ours >= 1.2x T5X and >= 1.5x Hugging Face.
Peak memory (`--no-memory` skips it): each peer again in a fresh process of its own (build, compile, three
steps), whose peak RSS is that peer's own and counts only the libraries that peer imports.
On a GPU each peer's peak device memory is read from its own allocator (JAX's or torch's) after its first
step, in this process. Then (`--no-profile` skips it; CPUs only) one step of ours and of Hugging Face is
profiled: ours by pass (forward, backward, the rest: loss head reductions, optimizer) and model part, from
jax.profiler's trace of XLA's ops; both as matmul kernels against everything else, the split that bounds what
either can gain on this CPU; last, the step's matmuls (`step_matmuls`: the model count's FLOPs) timed alone,
XLA's kernels against torch's, which says how much of the gap between the two steps the kernels explain.

T5X (github.com/google-research/t5x: its `examples.t5.network.Transformer`, `models.EncoderDecoderModel`
and `trainer.train_with_lr`, jitted) runs when `import t5x` works; it is not on PyPI, so put a checkout
on PYTHONPATH (with `airio` and `jestimator` importable, stubs will do: only their names are used).
Otherwise it is skipped with a note.

Usage: python benchmarks/train_bench.py [--steps 3] [--rounds 2] [--no-memory] [--no-profile]
       [--size small] [--batch 8] [--inputs 256] [--targets 128] [--dtype float32]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
from rss import peak_rss_mib

VOCAB = 32128


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every peer trains: T5 v1.0 of `size`, batches of `batch` rows of `inputs` + `targets` tokens."""

    size: str = "small"
    batch: int = 8
    inputs: int = 256
    targets: int = 128
    dtype: str = "float32"

    def config(self):
        from textchem_jax.models.config import t5_config

        return t5_config(self.size, "1.0", vocab_size=VOCAB, dropout_rate=0.0, dtype=self.dtype)

    def batch_of(self, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        targets = rng.integers(3, VOCAB, (self.batch, self.targets)).astype(np.int32)
        return {
            "encoder_input_tokens": rng.integers(3, VOCAB, (self.batch, self.inputs)).astype(np.int32),
            "decoder_input_tokens": np.concatenate([np.zeros((self.batch, 1), np.int32), targets[:, :-1]], axis=1),
            "decoder_target_tokens": targets,
            "decoder_loss_weights": np.ones((self.batch, self.targets), np.float32),
        }


class Ours:
    def __init__(self, setup: Setup):
        import jax
        import optax

        from textchem_jax import partitioning, trainer
        from textchem_jax.models.adapters import EncoderDecoderModel

        self.jax, self.setup = jax, setup
        schedule = trainer.learning_rate_schedule("constant", 6e-4)
        self.trainer = trainer.Trainer(
            EncoderDecoderModel(setup.config(), z_loss=0.0),
            optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0),  # as torch.optim.AdamW below
            partitioning.make_mesh(),
        )
        self.state = self.trainer.init_state(jax.random.key(0))
        self.rng = jax.random.key(1)
        example = self.trainer.shard_batch(setup.batch_of(0))
        start = time.perf_counter()
        self.compiled = self.trainer.train_step.lower(self.state, example, self.rng).compile()
        self.compile_seconds = time.perf_counter() - start
        analysis = self.compiled.cost_analysis()
        analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
        self.flops = float(analysis.get("flops", 0.0))
        self.first_loss = self.step(0)  # warm-up; the loss of fresh weights
        self.device_peak_mib = jax_device_peak_mib(jax)

    def step(self, seed: int) -> float:
        self.state, metrics = self.compiled(self.state, self.trainer.shard_batch(self.setup.batch_of(seed)), self.rng)
        return float(self.jax.device_get(metrics["loss"]))


def jax_device_peak_mib(jax) -> float | None:
    """Peak bytes JAX's allocator held on the first device so far (None on CPUs, which keep no such count)."""
    stats = jax.devices()[0].memory_stats() or {}
    return stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None


class HuggingFace:
    """transformers' T5ForConditionalGeneration with torch.optim.AdamW, on CUDA when torch sees a GPU."""

    def __init__(self, setup: Setup):
        import contextlib

        import torch
        from transformers import T5Config, T5ForConditionalGeneration

        from textchem_jax.models.hf_convert import hf_config_from

        torch.manual_seed(0)
        self.torch, self.setup = torch, setup
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        config = T5Config(**hf_config_from(setup.config()))  # float32 weights (param_dtype), as ours
        self.model = T5ForConditionalGeneration(config).to(self.device).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=6e-4, weight_decay=0.0)
        self.autocast = (
            torch.autocast(self.device, dtype=torch.bfloat16) if setup.dtype == "bfloat16" else contextlib.nullcontext()
        )
        self.first_loss = self.step(0)  # warm-up; the loss of fresh weights
        self.device_peak_mib = torch.cuda.max_memory_allocated() / 2**20 if self.device == "cuda" else None

    def step(self, seed: int) -> float:
        b = {k: self.torch.from_numpy(v.astype(np.int64)).to(self.device)
             for k, v in self.setup.batch_of(seed).items() if k != "decoder_loss_weights"}  # fmt: skip
        with self.autocast:
            inputs = b["encoder_input_tokens"]
            out = self.model(input_ids=inputs, attention_mask=(inputs > 0).long(),
                             decoder_input_ids=b["decoder_input_tokens"], labels=b["decoder_target_tokens"])  # fmt: skip
        out.loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(out.loss.detach())


def fastest(run, *args, repeats: int) -> float:
    """Seconds of the fastest of `repeats` timed `run(*args)` after one untimed warm-up (XLA's compile, torch's
    first-call setup): a peak, so a neighbour's load during one run does not count."""
    run(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def torch_matmul_peak(torch, dtype: str, size: int = 1024, repeats: int = 10) -> float:
    """FLOP/s of torch's fastest of `repeats` CPU matmuls in `dtype` (or float32, if faster), as
    `trainer.measure_matmul_peak` times JAX's: on CPUs with AMX, torch's bfloat16 matmul runs several times
    faster than XLA's (AVX-512 Xeon, 1024 wide: 1,501 against 234 GFLOP/s), so the CPU's peak is the faster."""
    squares = (torch.ones((size, size), dtype=getattr(torch, name)) for name in {dtype, "float32"})
    return 2 * size**3 / min(fastest(lambda x: x @ x, x, repeats=repeats) for x in squares)


class T5X:
    """Real T5X: its network and model, its train step (`trainer.train_with_lr`) with the same optax AdamW."""

    def __init__(self, setup: Setup):
        import functools

        import jax
        import jax.numpy as jnp
        import optax
        import seqio
        from t5x import losses, models, optimizers
        from t5x import train_state as train_state_lib
        from t5x import trainer as t5x_trainer
        from t5x.examples.t5 import network

        self.jax, self.setup = jax, setup
        ours = setup.config()
        config = network.T5Config(vocab_size=VOCAB, dtype=jnp.dtype(setup.dtype), emb_dim=ours.d_model,
                                  num_heads=ours.num_heads, num_encoder_layers=ours.num_encoder_layers,
                                  num_decoder_layers=ours.num_decoder_layers, head_dim=ours.d_kv, mlp_dim=ours.d_ff,
                                  mlp_activations=("relu",), dropout_rate=0.0, logits_via_embedding=True)  # fmt: skip
        vocabulary = seqio.PassThroughVocabulary(VOCAB)
        adamw = optax.adamw(6e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0)
        self.model = models.EncoderDecoderModel(
            network.Transformer(config), vocabulary, vocabulary, optimizers.OptaxWrapper(adamw),
            z_loss=0.0, label_smoothing=0.0,
            # Mean over real target tokens (T5X's default is the plain sum): the gradient ours and HF take.
            loss_normalizing_factor=losses.SpecialLossNormalizingFactor.NUM_REAL_TARGET_TOKENS,
        )  # fmt: skip
        example = setup.batch_of(0)
        shapes = {key: value.shape for key, value in example.items()}
        types = {key: jnp.int32 for key in example if key.endswith("_tokens")}
        variables = self.model.get_initial_variables(jax.random.PRNGKey(0), shapes, types)
        self.state = train_state_lib.FlaxOptimTrainState.create(self.model.optimizer_def, variables)
        self.learning_rate = jnp.asarray(6e-4, jnp.float32)  # logged only: the optax schedule is AdamW's own
        self.rng = jax.random.PRNGKey(1)
        self.train_step = jax.jit(
            functools.partial(t5x_trainer.train_with_lr, model=self.model, num_microbatches=None),
            donate_argnums=(0,),
        )
        self.first_loss = self.step(0)  # warm-up (and compile); the loss of fresh weights

    def step(self, seed: int) -> float:
        self.state, metrics = self.train_step(self.state, self.setup.batch_of(seed), self.learning_rate, self.rng)
        return float(self.jax.device_get(metrics["loss"].compute()))


PARTS = (("token_embedder", "embed/logits"), ("attention", "attention"), ("mlp", "mlp"), ("norm", "norms"))  # op_name -> part
REST = "optimizer, loss, rest"  # ops of neither pass of the model
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")  # torch's leaf matmul kernels


def our_profile(ours) -> dict[str, float]:
    """Seconds of one of our steps by (pass, part, matmul or not): XLA's ops as jax.profiler traced them, each
    attributed through the op_name XLA keeps from our code (`transpose(jvp(...))` is the backward pass)."""
    import collections
    import gzip
    import pathlib
    import re
    import tempfile

    jax = ours.jax
    example = ours.trainer.shard_batch(ours.setup.batch_of(0))
    hlo = ours.compiled.as_text()
    op_names = dict(re.findall(r'^\s*(?:ROOT )?%([\w.\-]+) = .*?op_name="([^"]+)"', hlo, re.M))
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            ours.state, metrics = ours.compiled(ours.state, example, ours.rng)
            jax.block_until_ready(metrics)
        (trace,) = pathlib.Path(directory).rglob("*.trace.json.gz")
        events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    seconds = collections.Counter()
    for event in events:
        op = op_names.get(event.get("name")) if event.get("ph") == "X" else None
        if op is None:
            continue
        phase = "backward" if "transpose(jvp" in op else "forward" if "jvp(" in op else REST
        part = "" if phase == REST else next((name for key, name in PARTS if key in op), "other")
        kind = "matmul" if op.endswith("dot_general") else "other"
        seconds[f"{phase:<9} {part:<10} {kind}"] += event["dur"] / 1e6
    return dict(seconds)


def hf_profile(hf) -> dict[str, float]:
    """Seconds of one Hugging Face step by kind: torch's matmul kernels and the rest (self times of its ops)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as trace:
        hf.step(0)
    seconds = {"matmul": 0.0, "other": 0.0}
    for op in trace.key_averages():
        seconds["matmul" if op.key in MATMULS else "other"] += op.self_cpu_time_total / 1e6
    return seconds


def print_profiles(ours, hf) -> None:
    """Where the time of one step went: ours by pass and part, Hugging Face's by kind, matmuls vs the rest."""
    mine, theirs = our_profile(ours), hf_profile(hf)
    print("where one step's time went (profiled; op time, so a little above the wall time):")
    for key, value in sorted(mine.items(), key=lambda item: -item[1]):
        if value >= 0.01:
            print(f"  ours  {key:<36}{value * 1000:8.0f} ms")
    totals = {"ours": {kind: sum(v for k, v in mine.items() if k.endswith(kind)) for kind in ("matmul", "other")},
              "hf": theirs}  # fmt: skip
    for name, table in totals.items():
        print(f"  {name:<5} matmuls {table['matmul'] * 1000:6.0f} ms, everything else {table['other'] * 1000:6.0f} ms")


def step_matmuls(setup: Setup) -> dict[tuple[str, tuple, tuple], int]:
    """Every matmul of one T5 v1.0 train step as (einsum, lhs shape, rhs shape) -> how many: each dense layer's
    forward product, input gradient and weight gradient, and each attention product's forward and two
    gradients, batched over (batch x heads). The same list whoever computes it: which kernels a step needs."""
    config = setup.config()
    encoder, decoder = setup.batch * setup.inputs, setup.batch * setup.targets  # token rows
    d, inner, ff, batch_heads = config.d_model, config.inner_dim, config.d_ff, setup.batch * config.num_heads
    matmuls: dict[tuple[str, tuple, tuple], int] = {}

    def add(spec: str, lhs: tuple, rhs: tuple, count: int) -> None:
        matmuls[spec, lhs, rhs] = matmuls.get((spec, lhs, rhs), 0) + count

    def dense(rows: int, fan_in: int, fan_out: int, count: int) -> None:  # x (rows, in) @ w (in, out)
        add("na,ab->nb", (rows, fan_in), (fan_in, fan_out), count)
        add("nb,ab->na", (rows, fan_out), (fan_in, fan_out), count)  # input gradient
        add("na,nb->ab", (rows, fan_in), (rows, fan_out), count)  # weight gradient

    def attention(queries: int, keys: int, count: int) -> None:  # scores q k^T, then context p v
        q, k = (batch_heads, queries, config.d_kv), (batch_heads, keys, config.d_kv)
        p = (batch_heads, queries, keys)
        # each shape twice: the scores' forward (q k^T) and the context's weight gradient (g v^T); the context's
        # forward (p v) and the scores' query gradient (ds k); the key and the value gradients (ds^T q, p^T g)
        for spec, lhs, rhs in (("bqd,bkd->bqk", q, k), ("bqk,bkd->bqd", p, k), ("bqk,bqd->bkd", p, q)):
            add(spec, lhs, rhs, 2 * count)

    layers_e, layers_d = config.num_encoder_layers, config.num_decoder_layers
    for rows, count in ((encoder, layers_e), (decoder, 2 * layers_d)):  # decoder: self- and cross-attention
        dense(rows, d, inner, count)  # queries
        dense(rows, inner, d, count)  # attention out
    dense(encoder, d, inner, 2 * (layers_e + layers_d))  # keys and values (cross-attention's from the encoder)
    dense(decoder, d, inner, 2 * layers_d)
    for rows, count in ((encoder, layers_e), (decoder, layers_d)):
        dense(rows, d, ff, count)
        dense(rows, ff, d, count)
    attention(setup.inputs, setup.inputs, layers_e)
    attention(setup.targets, setup.targets, layers_d)
    attention(setup.targets, setup.inputs, layers_d)
    dense(decoder, d, config.vocab_size, 1)  # tied logits (the embedding's transpose)
    return matmuls


def print_kernels(setup: Setup, jax, torch, repeats: int = 5) -> None:
    """The step's matmuls (`step_matmuls`) timed alone, outside any model: XLA's CPU kernels (as our step
    compiles them, each product jitted on its own) against torch's (`torch.einsum`), fastest of `repeats`,
    weighted by count: how much of the gap between the two steps the kernels themselves explain."""
    import jax.numpy as jnp

    as_torch = getattr(torch, setup.dtype)
    rng = np.random.default_rng(0)
    rows, flops = [], 0  # rows: (seconds of XLA's, seconds of torch's, count, einsum, lhs shape, rhs shape)
    for (spec, lhs, rhs), count in step_matmuls(setup).items():
        a, b = (rng.standard_normal(shape, np.float32) for shape in (lhs, rhs))
        product = jax.jit(lambda x, y, spec=spec: jnp.einsum(spec, x, y))
        mine = fastest(lambda x, y: jax.block_until_ready(product(x, y)),
                       jnp.asarray(a, setup.dtype), jnp.asarray(b, setup.dtype), repeats=repeats)  # fmt: skip
        theirs = fastest(lambda x, y: torch.einsum(spec, x, y),
                         torch.from_numpy(a).to(as_torch), torch.from_numpy(b).to(as_torch), repeats=repeats)  # fmt: skip
        rows.append((mine * count, theirs * count, count, spec, lhs, rhs))
        operands = spec.split("->")[0].split(",")
        sizes = dict(zip(operands[0], lhs)) | dict(zip(operands[1], rhs))
        flops += 2 * count * math.prod(sizes.values())  # every index once: batch, free and contracted
    xla_total, torch_total = (sum(row[side] for row in rows) for side in (0, 1))
    print(f"the step's {sum(row[2] for row in rows)} matmuls ({flops / 1e9:.1f} GFLOP, {setup.dtype}) timed alone "
          f"({len(rows)} shapes, fastest of {repeats}): XLA's kernels {xla_total * 1000:.0f} ms, torch's "
          f"{torch_total * 1000:.0f} ms (XLA / torch {xla_total / torch_total:.2f}x); the shapes XLA loses most on:")  # fmt: skip
    for mine, theirs, count, spec, lhs, rhs in sorted(rows, key=lambda row: row[1] - row[0])[:6]:
        print(f"  {spec:<14} {str(lhs):<16} {str(rhs):<16} x{count:<3} XLA {mine * 1000:6.1f} ms, "
              f"torch {theirs * 1000:6.1f} ms ({mine / theirs:.2f}x)")


PEERS = {"ours": Ours, "t5x": T5X, "hf": HuggingFace}


def memory_of(name: str, setup: Setup) -> None:
    """In a fresh process: one peer built (its warm-up step compiles) and two more steps; prints its peak RSS."""
    from textchem_jax import xla_cpu

    xla_cpu.apply_cpu_flags()
    peer = PEERS[name](setup)
    for seed in (1, 2):
        peer.step(seed)
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}))


def print_memory(names: list[str], setup_flags: list[str]) -> None:
    """Each peer's peak RSS, measured in a child process of its own (see `memory_of`)."""
    peaks = {}
    for name in names:
        command = [sys.executable, __file__, f"--memory_of={name}", *setup_flags]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            print(f"peak RSS of {name}: its process failed (exit {done.returncode}): {done.stderr[-1500:]}")
            continue
        peaks[name] = json.loads(lines[-1])["peak_rss_mib"]
    print("peak RSS, each in a process of its own (build, compile, 3 steps): "
          + ", ".join(f"{name} {mib:,.0f} MiB" for name, mib in peaks.items()))  # fmt: skip
    for peer in ("t5x", "hf"):
        if "ours" in peaks and peer in peaks:
            print(f"peak RSS ours / {peer}: {peaks['ours'] / peaks[peer]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    defaults = Setup()
    parser.add_argument("--size", default=defaults.size, help="T5 v1.0 size: tiny, small, base, ...")
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--inputs", type=int, default=defaults.inputs, help="input tokens per row")
    parser.add_argument("--targets", type=int, default=defaults.targets, help="target tokens per row")
    parser.add_argument("--dtype", default=defaults.dtype, choices=["float32", "bfloat16"],
                        help="activation dtype of every peer (parameters and optimizer stay float32)")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                        help="then profile one step of ours and of Hugging Face on the CPU: where the time went")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                        help="then each peer's peak RSS, in a process of its own")
    parser.add_argument("--memory_of", choices=sorted(PEERS), help=argparse.SUPPRESS)  # that child process
    args = parser.parse_args()
    setup = Setup(args.size, args.batch, args.inputs, args.targets, args.dtype)
    setup_flags = [f"--{field.name}={getattr(setup, field.name)}" for field in dataclasses.fields(Setup)]
    if args.memory_of:
        memory_of(args.memory_of, setup)
        return
    from textchem_jax import xla_cpu

    xla_cpu.apply_cpu_flags()  # as our entry points do, before JAX starts (T5X, in this process, gets it too)
    import jax
    import torch

    from textchem_jax import provenance

    print(provenance.versions_line(("torch", "transformers")))

    device = jax.devices()[0]
    print(f"T5-{setup.size} v1.0 shape, batch {setup.batch}, inputs {setup.inputs}, targets {setup.targets}, AdamW, "
          f"{setup.dtype}; JAX on {device.device_kind} ({device.platform}), torch on "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}; {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    from textchem_jax.trainer import peak_flops

    peak, source = peak_flops(setup.dtype)
    if device.platform == "cpu" and not torch.cuda.is_available():  # the CPU's peak: its fastest matmul here
        torch_peak = torch_matmul_peak(torch, setup.dtype)
        source = f"the faster of JAX's {peak / 1e9:.1f} ({source}) and torch's {torch_peak / 1e9:.1f}"
        peak = max(peak, torch_peak)
    ours = Ours(setup)
    if importlib.util.find_spec("t5x") is not None:  # T5X imports TensorFlow: its start-up lines off, as in our commands
        from textchem_jax import launch

        launch.quiet_libraries()
    try:
        import t5x  # noqa: F401  (not on PyPI: a checkout on PYTHONPATH)
    except Exception as error:  # noqa: BLE001  (ImportError, or a checkout that does not import with our jax)
        t5x_peer = None
        print(f"T5X skipped ({type(error).__name__}: {error}): it is not on PyPI; "
              "put a T5X checkout on PYTHONPATH to compare with it")  # fmt: skip
    else:
        t5x_peer = T5X(setup)
    hf = HuggingFace(setup)
    peers = {"ours": ours, **({"t5x": t5x_peer} if t5x_peer is not None else {}), "hf": hf}
    model_flops = ours.trainer.model.train_flops(setup.batch_of(0))
    print(f"peak {peak / 1e9:.1f} GFLOP/s ({source}); our step: {model_flops / 1e9:.1f} GFLOP model (models.flops), "
          f"{ours.flops / 1e9:.1f} GFLOP executed (XLA), compiled in {ours.compile_seconds:.1f} s")  # fmt: skip
    print("first-batch loss, fresh random weights (~ln 32128 = 10.4): "
          + ", ".join(f"{name} {impl.first_loss:.3f}" for name, impl in peers.items()))  # fmt: skip
    peaks = {"ours (JAX)": ours.device_peak_mib, "HF (torch)": hf.device_peak_mib}  # T5X shares JAX's allocator
    if any(mib is not None for mib in peaks.values()):
        print("peak device memory after build and first step: "
              + ", ".join(f"{name} {mib:,.0f} MiB" for name, mib in peaks.items() if mib is not None))  # fmt: skip
    times = {name: [] for name in peers}
    for round_index in range(args.rounds):
        for name, impl in peers.items():
            start = time.perf_counter()
            for step in range(args.steps):
                impl.step(1 + round_index * args.steps + step)
            times[name].append((time.perf_counter() - start) / args.steps)
    tokens = setup.batch * (setup.inputs + setup.targets)
    seconds = {name: float(np.median(times[name])) for name in peers}
    for name in peers:
        hfu = f"  HFU {ours.flops / seconds[name] / peak:6.1%}" if name == "ours" else ""  # XLA's count: ours only
        print(f"{name:>5}: {seconds[name] * 1000:8.1f} ms/step {tokens / seconds[name]:9.0f} tokens/s  "
              f"MFU {model_flops / seconds[name] / peak:6.1%}{hfu}")  # fmt: skip
    if "t5x" in seconds:
        print(f"speed-up ours / T5X: {seconds['t5x'] / seconds['ours']:.2f}x (target 1.2x)")
    print(f"speed-up ours / Hugging Face: {seconds['hf'] / seconds['ours']:.2f}x (target 1.5x)")
    if args.memory:
        print_memory(list(peers), setup_flags)
    if args.profile:
        if device.platform == "cpu" and hf.device == "cpu":
            print_profiles(ours, hf)
            print_kernels(setup, jax, torch)
        else:
            print("profile skipped: it splits CPU op time (matmul kernels against the rest); use jax.profiler on a GPU")


if __name__ == "__main__":
    main()
