"""Parameters for evaluation, inference or fine-tuning, from any checkpoint a user has.

`path` may be a training run (`MODEL_DIR`, or its `checkpoints/` folder: the latest step is used),
one step folder, or a `textchem-convert --hf_dir` output (`params.npz`). Parameters are placed in the
shardings their logical axes imply on `mesh`.
"""

from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from textchem_jax import partitioning


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


def load_for_inference(model, path: str, mesh, *, like: Any = None) -> Any:
    """Parameters of the model adapter `model` from `path` (see module docstring), sharded for `mesh`."""
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}: give a MODEL_DIR of textchem-train or a textchem-convert output")
    target, shardings = abstract_params(model, mesh)
    if like is not None:
        target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
    if tf.io.gfile.exists(os.path.join(path, "params.npz")):
        import pathlib

        from textchem_jax.convert import read_params

        params = read_params(pathlib.Path(path), model.t5_config)
        return jax.tree_util.tree_map(lambda value, t: jax.device_put(jnp.asarray(value, t.dtype), t.sharding), params, target)
    root = _orbax_root(path)
    if root is None:
        raise FileNotFoundError(f"{path} holds neither params.npz nor numbered orbax checkpoints")
    from textchem_jax.checkpoints import load_params

    return load_params(root[0], target, step=root[1])
