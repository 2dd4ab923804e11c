"""Checkpoints with orbax: the train state plus each host's data-iterator position, saved atomically.

A checkpoint `MODEL_DIR/checkpoints/<step>/` holds `state/` (the sharded `TrainState`, written by
orbax from every host, asynchronously) and `data_iterator/` (one `tf.train.Checkpoint` of the tf.data
iterator per host), so that a resumed run continues on exactly the next batch. Orbax commits a step
only when all of it is written: a killed run never leaves a half checkpoint behind as the latest.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

logger = logging.getLogger("textchem_jax.checkpoints")


class DataIteratorHandler(ocp.CheckpointHandler):
    """Saves/restores a `tf.data` iterator, one file per host (its own shard of the data)."""

    def _prefix(self, directory: epath.Path) -> str:
        return str(directory / f"process_{jax.process_index()}-of-{jax.process_count()}")

    def save(self, directory: epath.Path, args: DataIteratorSave) -> None:
        import tensorflow as tf

        tf.train.Checkpoint(iterator=args.iterator).write(self._prefix(directory))

    def restore(self, directory: epath.Path, args: DataIteratorRestore) -> Any:
        import tensorflow as tf

        prefix = self._prefix(directory)
        if not tf.io.gfile.exists(prefix + ".index"):
            raise FileNotFoundError(
                f"no data iterator for process {jax.process_index()} in {directory}: the checkpoint was "
                f"written by {jax.process_count()} != this run's process count, or is incomplete"
            )
        tf.train.Checkpoint(iterator=args.iterator).read(prefix).assert_consumed()
        return args.iterator


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
    iterator: Any


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
    iterator: Any


class Checkpoints:
    """Periodic, keep-N, restore-latest checkpoints of one run directory (local or `gs://`)."""

    def __init__(self, directory: str, *, keep: int | None = 3, async_save: bool = True):
        self.directory = epath.Path(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True),
            item_names=("state", "data_iterator"),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, iterator: Any | None = None) -> None:
        items = {"state": ocp.args.StandardSave(state)}
        if iterator is not None:
            items["data_iterator"] = DataIteratorSave(iterator)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, abstract_state: Any, iterator: Any | None = None, step: int | None = None) -> tuple[Any, int] | None:
        """(state, step) of `step` (default: the latest), placed like `abstract_state`; None without any."""
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if iterator is not None:
            items["data_iterator"] = DataIteratorRestore(iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        logger.info("restored step %d from %s", step, self.directory)
        return restored.state, step

    def wait(self) -> None:
        """Blocks until asynchronous saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs with the shardings of `tree`: what orbax needs to restore into the same layout."""
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree
    )


def load_params(directory: str, abstract_params: Any, step: int | None = None) -> Any:
    """Only the parameters of a run's checkpoint, placed like `abstract_params` (ShapeDtypeStructs
    with shardings): for `INITIAL_CHECKPOINT_PATH`, evaluation and inference.

    Every parameter the model expects must be in the checkpoint with its shape (checked against the
    checkpoint's metadata before anything is read); a missing folder is never created.
    """
    manager = _params_manager(directory)
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {directory} (expected numbered step folders from textchem-train)")
        check_shapes(_stored_params(manager, step, directory), abstract_params, f"{directory} (step {step})")
        restore_args = jax.tree_util.tree_map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), abstract_params)
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item={"params": abstract_params}, restore_args={"params": restore_args}, partial_restore=True
                )
            ),
        )
    finally:
        manager.close()
    return restored.state["params"]


def _params_manager(directory: str) -> ocp.CheckpointManager:
    path = epath.Path(directory)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint folder {directory} (expected the numbered steps of textchem-train)")
    return ocp.CheckpointManager(
        path,
        item_names=("state", "data_iterator"),
        item_handlers={"state": ocp.PyTreeCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(create=False),
    )


def _stored_params(manager: ocp.CheckpointManager, step: int, directory: str) -> Any:
    """The parameters' metadata tree (shapes, dtypes) of a step, read without reading any array."""
    stored = manager.item_metadata(step)["state"]
    stored = getattr(stored, "tree", stored)
    if not isinstance(stored, dict) or "params" not in stored:
        raise ValueError(f"the checkpoint in {directory} (step {step}) holds no parameters")
    return stored["params"]


def stored_param_names(directory: str, step: int | None = None) -> set[str]:
    """Top-level parameter names (e.g. `encoder`, `decoder`) of a step (default: the latest)."""
    manager = _params_manager(directory)
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {directory} (expected numbered step folders from textchem-train)")
        return set(_stored_params(manager, step, directory))
    finally:
        manager.close()


def check_shapes(stored: Any, abstract_params: Any, where: str) -> None:
    """Every expected parameter is stored, with its shape: name the first that is not, and the fix."""
    fix = "use the model configuration the run was trained with (its MODEL_DIR/config.gin)"
    shapes = {
        jax.tree_util.keystr(path): tuple(getattr(leaf, "shape", ()))
        for path, leaf in jax.tree_util.tree_flatten_with_path(stored)[0]
    }
    for path, expected in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
        name = jax.tree_util.keystr(path)
        if name not in shapes:
            raise ValueError(f"parameter {name} is not in the checkpoint {where}: {fix}")
        if shapes[name] != tuple(expected.shape):
            raise ValueError(f"{name} is {shapes[name]} in {where} but {tuple(expected.shape)} in this model: {fix}")
