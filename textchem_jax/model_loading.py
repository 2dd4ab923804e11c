"""Parameters for evaluation, inference or fine-tuning, from any checkpoint a user has.

`path` may be a training run (`MODEL_DIR`, or its `checkpoints/` folder: the latest step is used),
one step folder, or a `textchem-convert --hf_dir` output (`params.npz`). Parameters are placed in the
shardings their logical axes imply on `mesh`.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from textchem_jax import partitioning
from textchem_jax.models.config import T5Config
from textchem_jax.models.hf_convert import numpy_dtype
from textchem_jax.models.t5 import stack_layer_params, unstack_layer_params

PARAMS_FILE = "params.npz"  # a textchem-convert directory's parameters, flat "encoder/layers_0/..." keys
_SEPARATOR = "/"


def abstract_params(model, mesh, rules=None) -> tuple[Any, Any]:
    """(ShapeDtypeStructs with shardings, shardings) of a model adapter's parameters, nothing allocated."""
    boxed = model.abstract_params()
    shardings = partitioning.param_shardings(mesh, boxed, rules)
    shapes = nn.meta.unbox(boxed)
    return jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings), shardings


def _orbax_root(path: str) -> tuple[str, int | None] | None:
    """(checkpoint manager folder, step or None for latest) if `path` is one of our run layouts."""
    import tensorflow as tf

    path = path.rstrip("/")
    if tf.io.gfile.isdir(os.path.join(path, "checkpoints")):
        return os.path.join(path, "checkpoints"), None
    if tf.io.gfile.isdir(os.path.join(path, "state")) and os.path.basename(path).isdigit():
        return os.path.dirname(path), int(os.path.basename(path))
    if any(name.rstrip("/").isdigit() for name in tf.io.gfile.listdir(path)):
        return path, None
    return None


def checkpoint_step(path: str) -> int:
    """The training step of the parameters `load_for_inference(path)` reads (0 for a converted directory)."""
    import tensorflow as tf

    if not tf.io.gfile.exists(path) or tf.io.gfile.exists(os.path.join(path, PARAMS_FILE)):
        return 0
    root = _orbax_root(path)
    if root is None:
        return 0
    if root[1] is not None:
        return root[1]
    steps = [int(name.rstrip("/")) for name in tf.io.gfile.listdir(root[0]) if name.rstrip("/").isdigit()]
    return max(steps, default=0)


def load_for_inference(model, path: str, mesh, *, like: Any = None) -> Any:
    """Parameters of the model adapter `model` from `path` (see module docstring), sharded for `mesh`."""
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}: give a MODEL_DIR of textchem-train or a textchem-convert output")
    target, shardings = abstract_params(model, mesh)
    if like is not None:
        target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
    if tf.io.gfile.exists(os.path.join(path, PARAMS_FILE)):
        params = read_params(pathlib.Path(path), model.t5_config)
        return jax.tree_util.tree_map(lambda value, t: jax.device_put(jnp.asarray(value, t.dtype), t.sharding), params, target)
    root = _orbax_root(path)
    if root is None:
        raise FileNotFoundError(f"{path} holds neither params.npz nor numbered orbax checkpoints")
    from textchem_jax.checkpoints import load_params

    return load_params(root[0], target, step=root[1])


def write_params(directory: pathlib.Path, params: dict) -> pathlib.Path:
    """Saves a nested dict of arrays as one .npz (bfloat16 stored as float32, exactly)."""
    flat: dict[str, np.ndarray] = {}

    def walk(tree: dict, prefix: tuple[str, ...]) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, (*prefix, key))
            else:
                array = np.asarray(value)
                if array.dtype.name == "bfloat16":  # .npz has no bfloat16
                    array = array.astype(np.float32)
                flat[_SEPARATOR.join((*prefix, key))] = array

    walk(dict(params), ())
    path = directory / PARAMS_FILE
    np.savez(path, **flat)
    return path


def read_params(directory: pathlib.Path, config: T5Config) -> dict:
    """The nested parameter dict written by `write_params`, cast to `config.param_dtype` and laid out
    for `config.scan_layers` (stacked or per-layer, whichever way it was written)."""
    dtype = numpy_dtype(config.param_dtype)
    params: dict = {}
    with np.load(directory / PARAMS_FILE) as arrays:
        for name in arrays.files:
            *parents, leaf = name.split(_SEPARATOR)
            node = params
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = arrays[name].astype(dtype)
    return stack_layer_params(params) if config.scan_layers else unstack_layer_params(params)
