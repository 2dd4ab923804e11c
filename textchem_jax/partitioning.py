"""Device mesh (`data`, `model`), logical axis rules, and parameter shardings.

Model code names axes logically (`batch, length, embed, mlp, heads, kv, joined_kv, vocab,
relpos_buckets, layers`); the rules here map them to the mesh: the batch is split over `data`
(data parallelism), the wide weight dimensions over `model` (tensor parallelism), as T5X's standard
rules do. The mesh honours `num_partitions` on every platform, CPU included, so multi-device code runs
in tests with `--xla_force_host_platform_device_count`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "model")
LogicalRules = Sequence[tuple[str, str | None]]


def standard_logical_axis_rules() -> tuple[tuple[str, str | None], ...]:
    """Logical axis -> mesh axis: batch on `data`; vocab, mlp, heads and joined_kv on `model`; the rest replicated."""
    return (
        ("batch", "data"),
        ("vocab", "model"),
        ("mlp", "model"),
        ("heads", "model"),
        ("joined_kv", "model"),
        ("embed", None),
        ("kv", None),
        ("length", None),
        ("relpos_buckets", None),
        ("layers", None),
    )


def make_mesh(
    num_partitions: int | None = None,
    mesh_shape: Sequence[int] | None = None,
    devices: Sequence[Any] | None = None,
) -> Mesh:
    """A (`data`, `model`) mesh over `devices` (default: all).

    `mesh_shape` (data, model) wins; otherwise `model` = `num_partitions` (default 1) and `data` takes the
    remaining devices. On TPU/GPU the device order follows the physical topology (mesh_utils).
    """
    devices = list(jax.devices() if devices is None else devices)
    if num_partitions is not None and (isinstance(num_partitions, bool) or not isinstance(num_partitions, int)
                                       or num_partitions < 1):  # fmt: skip
        raise ValueError(f"NUM_PARTITIONS={num_partitions!r} (num_partitions): give a whole number >= 1, the devices "
                         "each copy of the model is split over (1: data parallelism only)")  # fmt: skip
    if mesh_shape is None:
        model = num_partitions or 1
        if len(devices) % model:
            divisors = [n for n in range(1, len(devices) + 1) if len(devices) % n == 0]
            raise ValueError(f"NUM_PARTITIONS={model} (num_partitions) does not divide the {len(devices)} devices: use "
                             f"one of {', '.join(map(str, divisors))}")  # fmt: skip
        mesh_shape = (len(devices) // model, model)
    mesh_shape = tuple(int(n) for n in mesh_shape)
    if len(mesh_shape) != 2 or int(np.prod(mesh_shape)) != len(devices):
        raise ValueError(f"mesh_shape {mesh_shape} must be (data, model) with data * model = {len(devices)} devices")
    if num_partitions is not None and mesh_shape[1] != num_partitions:
        raise ValueError(f"mesh_shape {mesh_shape} disagrees with num_partitions={num_partitions}")
    if devices[0].platform in ("tpu", "gpu", "cuda", "rocm"):
        from jax.experimental import mesh_utils

        device_grid = mesh_utils.create_device_mesh(mesh_shape, devices, allow_split_physical_axes=True)
    else:
        device_grid = np.asarray(devices, dtype=object).reshape(mesh_shape)
    return Mesh(device_grid, MESH_AXES)


def host_data_shard(mesh: Mesh) -> tuple[int, int]:
    """(index, count) of this host's slice of the batch: its position along the mesh's `data` axis.

    Hosts whose devices sit in the same `data` rows read the same examples (T5X's rule), so that when the
    `model` axis spans hosts every device of a row gets the same rows; with one host per row this is the
    process index. Each host must hold a contiguous block of rows of the same size.
    """
    data = mesh.shape["data"]
    me = jax.process_index()
    rows = [i for i in range(data) if any(d.process_index == me for d in np.asarray(mesh.devices)[i].flat)]
    if not rows:
        raise ValueError(f"process {me} has no device in the mesh {dict(mesh.shape)}")
    per_host = len(rows)
    if rows != list(range(rows[0], rows[0] + per_host)) or data % per_host or rows[0] % per_host:
        raise ValueError(f"process {me} holds data rows {rows} of {data}: a host's rows must be one aligned block")
    return rows[0] // per_host, data // per_host


@contextlib.contextmanager
def activate(mesh: Mesh, rules: LogicalRules | None = None) -> Iterator[None]:
    """Makes `mesh` the current mesh and `rules` the logical axis rules (for with_logical_constraint)."""
    rules = standard_logical_axis_rules() if rules is None else rules
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def logical_partition_specs(boxed_params: Any) -> Any:
    """The tree of logical PartitionSpecs (axis names) of boxed (`nn.LogicallyPartitioned`) parameters."""
    return nn.get_partition_spec(boxed_params)


def param_shardings(mesh: Mesh, abstract_params: Any, rules: LogicalRules | None = None) -> Any:
    """NamedShardings (tree shaped like the unboxed parameters) for boxed, e.g. jax.eval_shape'd, parameters;
    a mesh that cannot split them is said first (`check_divisible`)."""
    rules = standard_logical_axis_rules() if rules is None else rules
    check_divisible(mesh, abstract_params, rules)
    return nn.logical_to_mesh_sharding(logical_partition_specs(abstract_params), mesh, rules)


# What each sharded logical axis is in a model's configuration, for messages.
AXIS_SIZES = {"heads": "num_heads", "mlp": "d_ff", "joined_kv": "num_heads * d_kv", "vocab": "vocab_size",
              "embed": "d_model", "kv": "d_kv", "relpos_buckets": "relative_attention_num_buckets"}  # fmt: skip


def _alternatives(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers[:-1])) + f" or {numbers[-1]}" if len(numbers) > 1 else str(numbers[0])


def check_divisible(mesh: Mesh, boxed_params: Any, rules: LogicalRules) -> None:
    """Every parameter dimension the rules put on a mesh axis is a multiple of that axis's size. Said before any
    array is made: JAX's own error came from the middle of reading a checkpoint ("array axis 1 is partitioned 8
    times, but the dimension size is 4") or of training's first step, and named neither setting."""
    sizes: dict[str, set[int]] = {}  # mesh axis -> the dimension sizes it splits
    failing: dict[str, tuple[str, int, str]] = {}  # mesh axis -> (logical axis, size, parameter), the first one
    leaves = jax.tree_util.tree_flatten_with_path(boxed_params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
    for path, leaf in leaves:
        if not isinstance(leaf, nn.LogicallyPartitioned):
            continue
        for name, size, axes in zip(leaf.names, leaf.value.shape, nn.logical_to_mesh_axes(tuple(leaf.names), rules)):
            for axis in (axes,) if isinstance(axes, str) else axes or ():
                sizes.setdefault(axis, set()).add(size)
                if size % mesh.shape[axis] and axis not in failing:
                    failing[axis] = (name, size, _path_name(path))
    for axis, (name, size, parameter) in failing.items():
        common = int(np.gcd.reduce(sorted(sizes[axis])))
        fits = _alternatives([n for n in range(1, common + 1) if common % n == 0 and mesh.size % n == 0])
        setting, fix = (f"NUM_PARTITIONS={mesh.shape[axis]}", f"use NUM_PARTITIONS {fits}") if axis == "model" else (
            f"the mesh's {axis} axis ({mesh.shape[axis]} devices)", f"give that axis {fits} devices")  # fmt: skip
        raise ValueError(f"{setting} must divide {AXIS_SIZES.get(name, name)}={size} (logical axis {name!r} of "
                         f"{parameter}, split over the mesh's {axis!r} axis): {fix} (each divides every dimension it "
                         f"splits and the {mesh.size} devices), or a model whose sizes it divides")  # fmt: skip


def sharded_init(
    init_fn: Callable[..., Any], *args: Any, mesh: Mesh, rules: LogicalRules | None = None
) -> tuple[Any, Any]:
    """(plain parameters created directly in their shards, their shardings) from `init_fn(*args)` -> boxed params."""
    rules = standard_logical_axis_rules() if rules is None else rules
    shardings = param_shardings(mesh, jax.eval_shape(init_fn, *args), rules)
    with activate(mesh, rules):
        params = jax.jit(lambda *a: nn.meta.unbox(init_fn(*a)), out_shardings=shardings)(*args)
    return params, shardings


def _path_name(path: tuple) -> str:
    return "/".join(str(getattr(key, "key", getattr(key, "name", key))) for key in path)


def describe_params(boxed_params: Any, rules: LogicalRules | None = None) -> str:
    """One line per parameter (path, shape, dtype, logical axes, partition spec) and the total count.

    Takes boxed parameters (concrete or from jax.eval_shape); plain arrays are listed with unknown axes.
    This is the body of a run's `model-info.txt`.
    """
    rules = standard_logical_axis_rules() if rules is None else rules
    leaves = jax.tree_util.tree_flatten_with_path(
        boxed_params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )[0]
    rows, total = [], 0
    for path, leaf in leaves:
        if isinstance(leaf, nn.LogicallyPartitioned):
            value, names = leaf.value, tuple(leaf.names)
            spec = PartitionSpec(*nn.logical_to_mesh_axes(names, rules))
        else:
            value, names, spec = leaf, None, None
        shape = tuple(value.shape)
        total += int(np.prod(shape))
        axes = "(" + ", ".join(f"{n}={s}" for n, s in zip(names, shape)) + ")" if names else f"{shape} (no axes)"
        spec_text = "PartitionSpec(" + ", ".join(map(repr, spec)) + ")" if spec is not None else "unknown"
        rows.append((_path_name(path), f"{int(np.prod(shape)):,}", axes, str(np.dtype(value.dtype)), spec_text))
    widths = [max(len(row[i]) for row in rows) for i in range(4)] if rows else [0] * 4
    lines = [
        f"Variable {name:<{widths[0]}}  size {size:>{widths[1]}}  shape {axes:<{widths[2]}}  "
        f"dtype {dtype:<{widths[3]}}  partition spec {spec}"
        for name, size, axes, dtype, spec in rows
    ]
    lines.append(f"Total number of parameters: {total:,}")
    return "\n".join(lines) + "\n"


def sharding_spec(array: jax.Array) -> PartitionSpec | None:
    """The PartitionSpec an array is actually laid out with (None when not NamedSharding-ed)."""
    sharding = getattr(array, "sharding", None)
    return sharding.spec if isinstance(sharding, NamedSharding) else None
