"""T5X checkpoints without T5X: read every layout T5X has written, write the one `t5x.train` restores.

A T5X run writes `MODEL_DIR/checkpoint_<step>/` in one of these layouts:
- T5X's own (`checkpoints.Checkpointer`, msgpack version 3): a `checkpoint` msgpack file
  `{"version": 3, "optimizer": {"target": params, "state": {"step", "param_states"}}}` whose leaves are
  arrays, or TensorStore specs of zarr arrays stored beside it (`target.encoder.layers_0...`), the
  spec's path inside `kvstore` (tensorstore >= 0.1.14) or beside it (older);
- a version-0 (Flax) file: the same without the `optimizer` level;
- orbax (`OrbaxCheckpointManagerInterface`): `checkpoint_<step>/state/` (or `_METADATA` beside the
  `checkpoint` file), the same tree as an orbax PyTree.
Optimizer state may be absent in any of them (exported or params-only checkpoints).

T5X's network names its parameters as ours do (`token_embedder/embedding`, `encoder/layers_0/attention/
query/kernel`, ...); the one difference is the relative position table, `(heads, buckets)` in T5X and
`(buckets, heads)` here. Paths may be local or `gs://` (tf.io.gfile; TensorStore's gcs driver).

T5X keeps a model's settings in its gin files, not in the checkpoint, and most of them show in the parameter
shapes; the rest (`SETTINGS_NOT_IN_PARAMS`, and dropout) we record beside the parameters in `MODEL_SETTINGS_FILE`,
which T5X ignores and our import reads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from textchem_jax.paths import absolute, makedirs

CHECKPOINT_FILE = "checkpoint"
MODEL_SETTINGS_FILE = "textchem_model.json"
VOCABULARY_FILE = "spiece.model"
# What changes a T5's outputs and its parameter shapes cannot show (dropout, also not shown, changes only training).
SETTINGS_NOT_IN_PARAMS = ("relative_attention_max_distance", "layer_norm_epsilon")
VERSION = 3  # what T5X's Checkpointer writes and reads today
_STEP_DIR = re.compile(r"checkpoint_(\d+)$")


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def checkpoint_directory(path: str) -> str:
    """`path` itself when it is one `checkpoint_<step>/`, else the latest one inside it (a T5X MODEL_DIR)."""
    gfile = _gfile()
    path = str(path).rstrip("/")
    if gfile.exists(os.path.join(path, CHECKPOINT_FILE)) or gfile.isdir(os.path.join(path, "state")):
        return path
    steps = sorted(
        (int(m.group(1)), name.rstrip("/"))
        for name in (gfile.listdir(path) if gfile.isdir(path) else [])
        if (m := _STEP_DIR.match(name.rstrip("/")))
    )
    if not steps:
        ours = gfile.isdir(os.path.join(path, "checkpoints"))  # a textchem-train run: T5X reads it once converted
        raise FileNotFoundError(
            f"{path} is not a T5X checkpoint: expected {path}/checkpoint_<step>/ (or a checkpoint_<step> folder "
            "holding a `checkpoint` file or a `state/` folder)"
            + (f"; it is a textchem-train run: give T5X `textchem-convert --checkpoint_dir={path} "
               "--t5x_output_dir=DIR`'s DIR" if ours else "")
        )
    return os.path.join(path, steps[-1][1])


def _tensorstore_spec(directory: str, spec: Mapping[str, Any]) -> dict:
    """A stored spec made absolute: its array lives in `directory`, wherever the writer put it then."""
    name = spec["kvstore"].get("path") if "path" in spec["kvstore"] and "path" not in spec else spec["path"]
    name = os.path.basename(str(name).rstrip("/"))
    location = os.path.join(directory, name)
    if location.startswith("gs://"):
        bucket, _, key = location[len("gs://") :].partition("/")
        kvstore = {"driver": "gcs", "bucket": bucket, "path": key}
    else:
        kvstore = {"driver": "file", "path": location}
    return {"driver": spec.get("driver", "zarr"), "kvstore": kvstore}


def _is_spec(value: Any) -> bool:
    return isinstance(value, Mapping) and "driver" in value and "kvstore" in value


def _materialize(tree: Any, directory: str) -> Any:
    import tensorstore as ts

    if _is_spec(tree):
        return np.asarray(ts.open(_tensorstore_spec(directory, tree), open=True).result().read().result())
    if isinstance(tree, Mapping):
        return {key: _materialize(value, directory) for key, value in tree.items()}
    return np.asarray(tree)


def read_state(path: str) -> tuple[dict, str]:
    """The optimizer state dict `{"target": params, "state": {...}}` of a T5X checkpoint, all leaves numpy,
    and the `checkpoint_<step>` folder it came from."""
    directory = checkpoint_directory(str(absolute(path)))  # orbax takes absolute paths only
    gfile = _gfile()
    orbax_dir = os.path.join(directory, "state")
    if not gfile.isdir(orbax_dir) and gfile.exists(os.path.join(directory, "_METADATA")):
        orbax_dir = directory
    if gfile.isdir(orbax_dir):
        return _read_orbax(orbax_dir), directory
    from flax import serialization

    with gfile.GFile(os.path.join(directory, CHECKPOINT_FILE), "rb") as f:
        contents = serialization.msgpack_restore(f.read())
    if not isinstance(contents, Mapping):
        raise ValueError(f"{directory}/{CHECKPOINT_FILE} is not a T5X checkpoint (a msgpack mapping)")
    state = contents["optimizer"] if contents.get("version", 0) else contents  # version 0: Flax, no wrapper
    if "target" not in state:
        raise ValueError(f"{directory}/{CHECKPOINT_FILE} has no parameters ('target'): keys {sorted(state)}")
    return _materialize(state, directory), directory


def _read_orbax(directory: str) -> dict:
    import jax
    import orbax.checkpoint as ocp

    absl = logging.getLogger("absl")  # T5X keeps _CHECKPOINT_METADATA beside state/, where orbax looks and warns
    absl.addFilter(_metadata_beside_state)  # on every read: nothing is missing
    try:
        checkpointer = ocp.PyTreeCheckpointer()
        metadata = checkpointer.metadata(directory)
        tree = getattr(metadata, "item_metadata", None) or metadata
        tree = getattr(tree, "tree", tree)
        restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), dict(tree))
        restored = checkpointer.restore(directory, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    finally:
        absl.removeFilter(_metadata_beside_state)
    return jax.tree_util.tree_map(np.asarray, restored)


def _metadata_beside_state(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Metadata file does not exist")


def read_checkpoint(path: str) -> tuple[dict, int]:
    """`(params in our layout, step)` of a T5X checkpoint (a `checkpoint_<step>` folder or a MODEL_DIR)."""
    state, directory = read_state(path)
    step = state.get("state", {}).get("step")
    return swap_relpos_layout(state["target"]), step_of(directory) if step is None else int(np.asarray(step))


def step_of(directory: str) -> int:
    """The step a `checkpoint_<step>` folder's name gives (0 for another name)."""
    match = _STEP_DIR.search(str(directory).rstrip("/"))
    return int(match.group(1)) if match else 0


def config_from_params(params: Mapping, **overrides: Any):
    """The T5Config a parameter tree (ours) implies: sizes from the shapes, v1.0 (ReLU, tied logits) or v1.1
    (gated GELU, `logits_dense`). What shapes cannot tell (`SETTINGS_NOT_IN_PARAMS`) takes T5's values unless
    given in `overrides`."""
    from textchem_jax.models.config import T5Config

    encoder, decoder = params["encoder"], params["decoder"]
    mlp = encoder["layers_0"]["mlp"]
    gated = "wi_0" in mlp
    buckets, heads = np.shape(encoder["relpos_bias"]["rel_embedding"])
    vocab_size, d_model = np.shape(params["token_embedder"]["embedding"])
    fields = dict(
        vocab_size=vocab_size, d_model=d_model, num_heads=heads, relative_attention_num_buckets=buckets,
        d_kv=np.shape(encoder["layers_0"]["attention"]["query"]["kernel"])[1] // heads,
        d_ff=np.shape(mlp["wi_0" if gated else "wi"]["kernel"])[1],
        num_encoder_layers=sum(key.startswith("layers_") for key in encoder),
        num_decoder_layers=sum(key.startswith("layers_") for key in decoder),
        feed_forward="gated-gelu" if gated else "relu", tie_word_embeddings="logits_dense" not in decoder,
    )  # fmt: skip
    sizes = {key: value if isinstance(value, (bool, str)) else int(value) for key, value in fields.items()}
    return T5Config(**sizes, **overrides)


def read_model_settings(checkpoint: str) -> dict[str, Any] | None:
    """The settings `write_checkpoint` recorded beside a `checkpoint_<step>/` folder, None when there are none
    (a checkpoint T5X wrote)."""
    gfile = _gfile()
    path = os.path.join(checkpoint, MODEL_SETTINGS_FILE)
    if not gfile.exists(path):
        return None
    with gfile.GFile(path) as f:
        try:
            recorded = json.load(f)
        except ValueError as error:
            raise ValueError(f"{path}: not JSON ({error}); delete it to import with T5's defaults") from None
    if not isinstance(recorded, dict):
        raise ValueError(f"{path}: a JSON object of T5Config fields was expected; delete it to import with T5's defaults")
    return recorded


def non_default_settings(config) -> dict[str, Any]:
    """The settings of `config` that shapes cannot show and that differ from T5's."""
    defaults = {field.name: field.default for field in dataclasses.fields(config)}
    return {name: getattr(config, name) for name in SETTINGS_NOT_IN_PARAMS if getattr(config, name) != defaults[name]}


def swap_relpos_layout(tree: Mapping) -> dict:
    """T5X network parameters <-> ours: the same tree, the relative position tables transposed (its own inverse)."""
    return {
        key: swap_relpos_layout(value) if isinstance(value, Mapping)
        else (np.asarray(value).T if key == "rel_embedding" else np.asarray(value))
        for key, value in tree.items()
    }  # fmt: skip


def write_checkpoint(model_dir: str, params: Mapping, step: int, vocabulary: str | None = None, config=None) -> str:
    """Writes `params` (ours) as `model_dir/checkpoint_<step>/` in T5X's own layout (msgpack version 3 plus
    one zarr array per parameter), params only: `t5x.train` restores it as INITIAL_CHECKPOINT_PATH with
    gin_configs/t5x/textchem_t5x_finetune.gin (an assignment map that skips the optimizer state it does not
    hold, and `fallback_to_scratch` to start that state fresh).
    `vocabulary` (a SentencePiece model) is copied in as `spiece.model`, which T5X ignores and our
    gin_configs/t5x read (`vocabularies.checkpoint_vocabulary`); `config` (a T5Config) is recorded in
    `MODEL_SETTINGS_FILE`, so that our import restores what the shapes cannot show."""
    import jax
    import tensorstore as ts
    from flax import serialization

    gfile = _gfile()
    directory = os.path.join(str(absolute(model_dir)), f"checkpoint_{step}")
    if gfile.exists(directory):
        raise FileExistsError(f"{directory} exists: T5X never overwrites a checkpoint, and neither do we")
    temporary = f"{directory}.tmp-textchem"
    makedirs(temporary)
    writes = []

    def spec_of(path, value) -> dict:
        array = np.asarray(value)
        name = "target." + ".".join(str(getattr(k, "key", k)) for k in path)
        spec = {"driver": "zarr", "dtype": array.dtype.name, "kvstore": {"driver": "file", "path": name},
                "metadata": {"shape": list(array.shape), "chunks": list(array.shape),
                             "compressor": {"id": "gzip"}}}  # fmt: skip
        absolute = {**spec, **_tensorstore_spec(temporary, spec), "metadata": spec["metadata"], "dtype": spec["dtype"]}
        store = ts.open(absolute, create=True, delete_existing=True).result()
        writes.append(store.write(array))
        return spec

    target = jax.tree_util.tree_map_with_path(spec_of, swap_relpos_layout(params))
    for write in writes:
        write.result()
    contents = {"version": VERSION, "optimizer": {"target": target, "state": {"step": np.int32(step)}}}
    with gfile.GFile(os.path.join(temporary, CHECKPOINT_FILE), "wb") as f:
        f.write(serialization.msgpack_serialize(contents))
    if vocabulary is not None:
        gfile.copy(str(vocabulary), os.path.join(temporary, VOCABULARY_FILE))
    if config is not None:
        with gfile.GFile(os.path.join(temporary, MODEL_SETTINGS_FILE), "w") as f:
            f.write(json.dumps(config.to_dict(), indent=2) + "\n")
    gfile.rename(temporary, directory)
    return directory
