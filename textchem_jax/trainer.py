"""Train and eval steps: optimizer, gradient accumulation, jitted with explicit shardings.

The batch is SeqIO's encoder-decoder features (`encoder_input_tokens`, `decoder_input_tokens`,
`decoder_target_tokens`, `decoder_loss_weights`, and segment ids / positions when packed), sharded
over the mesh's `data` axis; parameters and optimizer state are sharded by the logical axis rules.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from textchem_jax import partitioning

Batch = Mapping[str, jax.Array]


def measure_matmul_peak(dtype: str = "float32", size: int = 1024, repeats: int = 10) -> float:
    """FLOP/s of a large matmul in `dtype` on the default device (MFU's denominator where no data sheet applies).

    The fastest of `repeats` timed runs: a peak, so a neighbour's load during one run does not lower it (on a
    shared 2-core machine the mean of 5 runs once read 190 GFLOP/s where the peak was 237, and MFU read 109%).
    1024 wide reads the same peak as 2048 on a 2-core CPU (45.1 against 45.0 GFLOP/s) in 0.7 s instead of 5.2.
    A narrower dtype's peak is at least float32's: its work can always run as float32. XLA's CPU bfloat16 dot
    is slower than its float32 one (AVX-512 Xeon: 234 against 392 GFLOP/s), so measured alone it gave a
    bfloat16 train step that ran at 215 GFLOP/s an MFU of 131%.
    """
    peak = _fastest_matmul(dtype, size, repeats)
    if jnp.finfo(dtype).bits < 32:
        peak = max(peak, _fastest_matmul("float32", size, repeats))
    return peak


@functools.cache  # once per process and (dtype, size, repeats), however the caller spells the arguments
def _fastest_matmul(dtype: str, size: int, repeats: int) -> float:
    import time

    x = jnp.ones((size, size), dtype)
    matmul = jax.jit(lambda a: a @ a)
    matmul(x).block_until_ready()
    fastest = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(x).block_until_ready()
        fastest = min(fastest, time.perf_counter() - start)
    return 2 * size**3 / fastest


# Dense peak FLOP/s of one chip by compute dtype, from the vendors' data sheets (device_kind substring, most
# specific first). float32 matmuls run as bf16 passes on TPUs and as TF32 on NVIDIA GPUs by JAX's default
# precision, so their peaks are those.
PEAK_FLOPS = (
    ("TPU v6 lite", {"bfloat16": 918e12, "float32": 918e12}),  # v6e (Trillium)
    ("TPU v5 lite", {"bfloat16": 197e12, "float32": 197e12}),  # v5e
    ("TPU v5", {"bfloat16": 459e12, "float32": 459e12}),  # v5p
    ("TPU v4", {"bfloat16": 275e12, "float32": 275e12}),
    ("H200", {"bfloat16": 989e12, "float32": 494.5e12}),
    ("H100", {"bfloat16": 989e12, "float32": 494.5e12}),  # SXM
    ("A100", {"bfloat16": 312e12, "float32": 156e12}),
)


def peak_flops(dtype: str = "float32", device=None) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from) of `device` (default: the first) for matmuls in `dtype`: the data
    sheet's for TPUs and NVIDIA GPUs, a measured matmul elsewhere (CPUs)."""
    device = device or jax.devices()[0]
    for kind, peaks in PEAK_FLOPS:
        if kind in device.device_kind and dtype in peaks:
            return peaks[dtype], f"{kind} {dtype} data sheet"
    at_least = " (or float32's, if faster)" if jnp.finfo(dtype).bits < 32 else ""
    return measure_matmul_peak(dtype), f"measured {dtype} matmul{at_least} on {device.device_kind}"


def run_peak_flops(dtype: str = "float32", devices=None) -> tuple[float, str]:
    """(peak FLOP/s of the whole run, where it comes from): MFU's denominator, for `devices` (default: all).

    Accelerators: one chip's peak times the chips. CPUs: the host's measured peak once per process, since a
    process's CPU devices (`--xla_force_host_platform_device_count`) share its cores; counted per device, 8
    simulated devices read an MFU of 3.0% where 1 read 12.5% for the same steps."""
    devices = list(jax.devices() if devices is None else devices)
    peak, source = peak_flops(dtype, devices[0])
    if devices[0].platform == "cpu":
        processes = len({device.process_index for device in devices})
        return peak * processes, f"{source}, once per process ({processes}): its CPU devices share its cores"
    return peak * len(devices), f"{source}, x {len(devices)} devices"


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    # The train metrics summed since the last logged interval and the run's token count (`Trainer.interval`), kept
    # in the state so that a resumed run logs what an uninterrupted one does; None (a state made by hand, or restored
    # from a checkpoint written before them) accumulates nothing.
    totals: Any = None


class Interval(NamedTuple):
    """What the training loop logs at a step: the interval's aggregates, not the last step's values alone."""

    metrics: dict[str, float]  # per-token means weighted by tokens, counts summed, norms and rate per step
    steps: int
    tokens_per_step: float  # non-padding input and target tokens of the global batches, the interval's mean
    # the run's exact count of those tokens since its first step (from INITIAL_CHECKPOINT_PATH: since that step);
    # None for a run resumed from a checkpoint written before the count
    tokens_seen: int | None


def learning_rate_schedule(
    name: str = "constant", learning_rate: float = 6e-4, warmup_steps: int = 0, decay_steps: int | None = None
) -> optax.Schedule:
    """`constant` (the Text+Chem T5 paper: 6e-4), `rsqrt` (T5X: lr / sqrt(max(step, warmup))), `cosine`, `linear`.

    A shorthand for gin (`@trainer.learning_rate_schedule()`); any optax schedule works as well.
    """
    if name == "constant":
        schedule = optax.constant_schedule(learning_rate)
    elif name == "rsqrt":
        schedule = lambda step: learning_rate / jnp.sqrt(jnp.maximum(step, max(warmup_steps, 1)))  # noqa: E731
        return schedule
    elif name in ("cosine", "linear"):
        if not decay_steps:
            raise ValueError(f"the {name} schedule needs decay_steps")
        schedule = (
            optax.cosine_decay_schedule(learning_rate, decay_steps)
            if name == "cosine"
            else optax.linear_schedule(learning_rate, 0.0, decay_steps)
        )
    else:
        raise ValueError(f"unknown schedule {name!r}: use constant, rsqrt, cosine or linear")
    if warmup_steps:
        warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
        schedule = optax.join_schedules([warmup, schedule], [warmup_steps])
    return schedule


@dataclasses.dataclass
class Trainer:
    """Owns the jitted steps of one model adapter (`textchem_jax.models.adapters`) on one mesh.

    `learning_rate_fn` (the optimizer's schedule, or its constant rate) is only logged; `num_microbatches` splits each batch
    into slices whose gradients are summed before one update.
    """

    model: Any  # a model adapter: loss_fn, init, wrap_optimizer
    optimizer: optax.GradientTransformation
    mesh: Mesh
    rules: partitioning.LogicalRules = dataclasses.field(default_factory=partitioning.standard_logical_axis_rules)
    num_microbatches: int = 1
    learning_rate_fn: optax.ScalarOrSchedule | None = None

    @property
    def batch_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec("data"))

    def init_state(self, rng: jax.Array) -> TrainState:
        """A fresh state created directly in its shards (no full copy on one device)."""
        params, self.param_shardings = partitioning.sharded_init(
            lambda: self.model.init(rng), mesh=self.mesh, rules=self.rules
        )
        self.optimizer = self.model.wrap_optimizer(self.optimizer, params)
        with partitioning.activate(self.mesh, self.rules):
            opt_state = jax.jit(self.optimizer.init)(params)
        replicated = NamedSharding(self.mesh, PartitionSpec())
        # Scalars (the step, optimizer counts) are replicated over the whole mesh, not left on one device.
        opt_state = jax.tree_util.tree_map(
            lambda x: x if len(x.sharding.device_set) == self.mesh.size else jax.device_put(x, replicated), opt_state
        )
        step = jax.device_put(jnp.zeros((), jnp.int32), replicated)
        state = TrainState(step, params, opt_state, self.empty_totals(counted=True))
        self.state_shardings = jax.tree_util.tree_map(lambda x: x.sharding, state)
        return state

    def empty_totals(self, counted: bool) -> dict[str, jax.Array]:
        """Zero sums for `TrainState.totals`, replicated; `counted`: the token count starts at step 0 (False for a
        run resumed from a checkpoint written before the count: it logs no `tokens_seen`)."""
        replicated = NamedSharding(self.mesh, PartitionSpec())
        # every key whatever the trainer logs: a resume that stops logging the learning rate restores the same tree
        floats = (*_TOKEN_SUMS, "num_tokens", "num_sequences", "grad_norm", "learning_rate", "param_norm", "tokens")
        totals = {key: np.zeros((), np.float32) for key in floats}  # `tokens`: the interval's, for a mean per step
        totals |= {"steps": np.zeros((), np.int32)}
        totals |= {"tokens_seen": np.zeros(2, np.int32), "counted": np.array(int(counted), np.int32)}
        return {key: jax.device_put(value, replicated) for key, value in totals.items()}

    @property
    def _per_step_keys(self) -> tuple[str, ...]:
        return ("grad_norm", "learning_rate") if self.learning_rate_fn is not None else ("grad_norm",)

    def interval(self, state: TrainState) -> Interval:
        """The train metrics of the steps since the last `start_interval` (a host read: call it at log steps only).
        One step's values were logged as the interval's: with log_period 2, step 4 showed step 4's batch alone, and
        the sweep's tokens seen (2,192 where 2,219 were trained) and final train loss came from 1 batch in 10."""
        totals = {key: np.asarray(value) for key, value in jax.device_get(state.totals).items()}
        steps = int(totals["steps"])
        tokens = max(float(totals["num_tokens"]), 1.0)
        metrics = {key: float(totals[key]) / tokens for key in _TOKEN_SUMS}
        metrics |= {key: float(totals[key]) / max(steps, 1) for key in self._per_step_keys}
        metrics |= {key: float(totals[key]) for key in ("num_tokens", "num_sequences")}  # summed
        metrics["param_norm"] = float(totals["param_norm"])  # the interval's last step's
        high, low = (int(word) for word in totals["tokens_seen"])
        seen = high * _WORD + low if totals["counted"] else None
        return Interval(metrics, steps, float(totals["tokens"]) / max(steps, 1), seen)

    def start_interval(self, state: TrainState) -> TrainState:
        """`state` with the interval's sums zeroed (the run's token count kept), placed as they were."""
        kept = ("tokens_seen", "counted")
        totals = {key: value if key in kept else jax.device_put(np.zeros(value.shape, value.dtype), value.sharding)
                  for key, value in state.totals.items()}  # fmt: skip
        return state.replace(totals=totals)

    def _loss(self, params: Any, batch: Batch, dropout_rng: jax.Array, deterministic: bool):
        loss_sum, metrics = self.model.loss_fn(params, batch, dropout_rng, deterministic)
        # Sums, so that microbatches add up; `_summarize` turns them into per-token means.
        sums = {key: metrics[key] * metrics["num_tokens"] for key in _PER_TOKEN}
        return loss_sum, {**metrics, **sums, "loss": loss_sum}

    def _grads(self, params: Any, batch: Batch, rng: jax.Array):
        """Summed loss gradients and metrics, over `num_microbatches` slices of the batch in turn."""
        grad_fn = jax.value_and_grad(lambda p, b, r: self._loss(p, b, r, False), has_aux=True)
        if self.num_microbatches == 1:
            (_, metrics), grads = grad_fn(params, batch, rng)
            return grads, metrics
        size = next(iter(batch.values())).shape[0]
        if size % self.num_microbatches:
            raise ValueError(f"batch size {size} is not divisible by num_microbatches={self.num_microbatches}")
        micro = jax.tree_util.tree_map(
            lambda x: x.reshape(self.num_microbatches, size // self.num_microbatches, *x.shape[1:]), dict(batch)
        )

        def accumulate(carry, inputs):
            grads_sum, metrics_sum = carry
            index, microbatch = inputs
            (_, metrics), grads = grad_fn(params, microbatch, jax.random.fold_in(rng, index))
            add = functools.partial(jax.tree_util.tree_map, jnp.add)
            return (add(grads_sum, grads), add(metrics_sum, metrics)), None

        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        shapes = jax.eval_shape(lambda: self._loss(params, jax.tree_util.tree_map(lambda x: x[0], micro), rng, True)[1])
        zero_metrics = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        (grads, metrics), _ = jax.lax.scan(accumulate, (zeros, zero_metrics), (jnp.arange(self.num_microbatches), micro))
        return grads, metrics

    def _train_step(self, state: TrainState, batch: Batch, rng: jax.Array):
        grads, metrics = self._grads(state.params, batch, jax.random.fold_in(rng, state.step))
        num_tokens = jnp.maximum(metrics["num_tokens"], 1.0)
        grads = jax.tree_util.tree_map(lambda g: g / num_tokens, grads)  # per-token mean over the whole batch
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        summary = _summarize(metrics)
        summary["grad_norm"] = optax.tree.norm(grads)
        summary["param_norm"] = optax.tree.norm(params)  # the loop refuses to save non-finite parameters
        if self.learning_rate_fn is not None:
            rate = self.learning_rate_fn(state.step) if callable(self.learning_rate_fn) else self.learning_rate_fn
            summary["learning_rate"] = jnp.asarray(rate, jnp.float32)
        totals = None if state.totals is None else self._added(state.totals, metrics, summary, batch)
        return TrainState(state.step + 1, params, opt_state, totals), summary

    def _added(self, totals: dict, sums: Mapping[str, jax.Array], summary: Mapping[str, jax.Array], batch: Batch):
        """`totals` plus one step: a few scalar adds inside the step, so that logging an interval needs no host read
        per step. The token count is two int32 words (JAX has no int64 by default; float32 is exact to 2**24 only)."""
        inputs, targets = batch["encoder_input_tokens"], batch["decoder_target_tokens"]
        tokens = (jnp.sum(inputs > 0) + jnp.sum(targets > 0)).astype(jnp.int32)
        low = totals["tokens_seen"][1] + tokens
        added = {key: totals[key] + sums[key] for key in (*_TOKEN_SUMS, "num_tokens", "num_sequences")}
        added |= {key: totals[key] + summary[key] for key in self._per_step_keys}
        return {**totals, **added, "param_norm": summary["param_norm"], "steps": totals["steps"] + 1,
                "tokens": totals["tokens"] + tokens.astype(jnp.float32),
                "tokens_seen": jnp.stack([totals["tokens_seen"][0] + low // _WORD, low % _WORD])}  # fmt: skip

    @functools.cached_property
    def train_step(self) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict]]:
        """`(state, batch, rng) -> (state, metrics)`, jitted with the state's and the batch's shardings."""
        replicated = NamedSharding(self.mesh, PartitionSpec())
        step = jax.jit(
            self._train_step,
            in_shardings=(self.state_shardings, self.batch_sharding, replicated),
            out_shardings=(self.state_shardings, replicated),
            donate_argnums=(0,),
        )

        def run(state, batch, rng):
            with partitioning.activate(self.mesh, self.rules):
                return step(state, batch, rng)

        def lower(state, batch, rng):  # for XLA's cost analysis (FLOPs), under the same rules as a step
            with partitioning.activate(self.mesh, self.rules):
                return step.lower(state, batch, rng)

        run.lower = lower
        return run

    @functools.cached_property
    def eval_step(self) -> Callable[[Any, Batch], dict]:
        """Teacher-forced loss and token accuracy, `(params, batch) -> metrics`."""
        replicated = NamedSharding(self.mesh, PartitionSpec())
        step = jax.jit(
            lambda params, batch: _summarize(self._loss(params, batch, jax.random.key(0), True)[1]),
            in_shardings=(self.state_shardings.params, self.batch_sharding),
            out_shardings=replicated,
        )

        def run(params, batch):
            with partitioning.activate(self.mesh, self.rules):
                return step(params, batch)

        return run

    @functools.cached_property
    def data_shards(self) -> int:
        """How many distinct host slices the batch has (`partitioning.host_data_shard`), fixed by the mesh."""
        return partitioning.host_data_shard(self.mesh)[1]

    def shard_batch(self, batch: Mapping[str, Any]) -> dict[str, jax.Array]:
        """A global batch from this host's rows: its slice along `data` (hosts sharing data rows hold the
        same rows)."""
        shards = self.data_shards
        return {
            key: jax.make_array_from_process_local_data(
                self.batch_sharding, value, (np.shape(value)[0] * shards, *np.shape(value)[1:])
            )
            for key, value in batch.items()
        }


_PER_TOKEN = ("cross_entropy", "z_loss", "accuracy")
_TOKEN_SUMS = ("loss", *_PER_TOKEN)  # summed over tokens by `_loss`: an interval's mean divides by its tokens
_WORD = 1 << 30  # the low word of `tokens_seen`: a step's tokens added to it stay below 2**31


def _summarize(metrics: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Summed loss terms -> per-token means, as logged."""
    tokens = jnp.maximum(metrics["num_tokens"], 1.0)
    return {**metrics, **{key: metrics[key] / tokens for key in _TOKEN_SUMS}}
