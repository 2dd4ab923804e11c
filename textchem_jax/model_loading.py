"""Parameters for evaluation, inference or fine-tuning, from any checkpoint a user has.

`path` may be a training run (`MODEL_DIR`, or its `checkpoints/` folder: the latest step is used),
one step folder, or a `textchem-convert --hf_dir` output (`params.npz`). Parameters are placed in the
shardings their logical axes imply on `mesh`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from textchem_jax import partitioning
from textchem_jax.checkpoints import check_shapes, load_params
from textchem_jax.checkpoints import stored_param_names as checkpoint_param_names
from textchem_jax.models.adapters import EncoderDecoderModel
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


def checkpoint_step(path: str | Mapping[str, str]) -> int:
    """The training step of the parameters `load_for_inference(path)` reads (0 for a converted directory,
    or for parts taken from several checkpoints)."""
    import tensorflow as tf

    if isinstance(path, Mapping) or not tf.io.gfile.exists(path) or tf.io.gfile.exists(os.path.join(path, PARAMS_FILE)):
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
        params = read_params(path, model.t5_config)
        check_shapes(params, target, path)
        return jax.tree_util.tree_map(lambda value, t: jax.device_put(jnp.asarray(value, t.dtype), t.sharding), params, target)
    root = _orbax_root(path)
    if root is None:
        raise FileNotFoundError(f"{path} holds neither params.npz nor numbered orbax checkpoints")
    return load_params(root[0], target, step=root[1])


def stored_param_names(path: str) -> set[str]:
    """Top-level parameter names a checkpoint holds (T5: `token_embedder`, `encoder`, `decoder`)."""
    import tensorflow as tf

    if tf.io.gfile.exists(os.path.join(path, PARAMS_FILE)):
        with _params_file(path) as arrays:
            return {name.split(_SEPARATOR)[0] for name in arrays.files}
    root = _orbax_root(path) if tf.io.gfile.exists(path) else None
    if root is None:
        raise FileNotFoundError(f"no checkpoint at {path}: give a MODEL_DIR of textchem-train or a textchem-convert output")
    return checkpoint_param_names(root[0], root[1])


def initial_params(model, source: str | Mapping[str, str], mesh, like: Any) -> tuple[Any, int]:
    """(parameters, step) a new run starts from (`INITIAL_CHECKPOINT_PATH`), placed like `like` (the fresh
    ones). The step is the checkpoint's when it is this model's (T5X: TRAIN_STEPS counts on), else 0.

    `source` is a checkpoint of this model, or a T5 checkpoint (a `textchem-convert` import or a T5
    run) whose parts the adapter takes (`with_t5_parts`: e2-CLM encoders and decoder from real T5
    weights), or a mapping part -> T5 checkpoint (e.g. {"text": t5-small, "chemistry": MolT5,
    "decoder": t5-small}) for encoders started from different checkpoints.
    """
    if not isinstance(source, Mapping) and stored_param_names(source) == set(model.abstract_params()):
        return load_for_inference(model, source, mesh, like=like), checkpoint_step(source)
    parts = dict(source) if isinstance(source, Mapping) else {part: source for part in model.t5_parts}
    t5 = EncoderDecoderModel(model.t5_config)
    params = like
    for part, path in parts.items():
        params = model.with_t5_parts(params, load_for_inference(t5, path, mesh), (part,))
    return params, 0


def write_params(directory: str | os.PathLike, params: dict) -> epath.Path:
    """Saves a nested dict of arrays as one .npz (bfloat16 stored as float32, exactly), local or gs://."""
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
    buffer = io.BytesIO()
    np.savez(buffer, **flat)
    path = epath.Path(directory) / PARAMS_FILE
    path.write_bytes(buffer.getvalue())
    return path


def _params_file(directory: str | os.PathLike):
    """The `params.npz` of a converted directory (local or `gs://`)."""
    return np.load(io.BytesIO((epath.Path(directory) / PARAMS_FILE).read_bytes()))


def read_params(directory: str | os.PathLike, config: T5Config) -> dict:
    """The nested parameter dict written by `write_params`, cast to `config.param_dtype` and laid out
    for `config.scan_layers` (stacked or per-layer, whichever way it was written)."""
    dtype = numpy_dtype(config.param_dtype)
    params: dict = {}
    with _params_file(directory) as arrays:
        for name in arrays.files:
            *parents, leaf = name.split(_SEPARATOR)
            node = params
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = arrays[name].astype(dtype)
    return stack_layer_params(params) if config.scan_layers else unstack_layer_params(params)
