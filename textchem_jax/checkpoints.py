"""Checkpoints with orbax: the train state plus each host's data-iterator position, saved atomically.

A checkpoint `MODEL_DIR/checkpoints/<step>/` holds `state/` (the sharded `TrainState`, written by
orbax from every host, asynchronously) and `data_iterator/` (one `tf.train.Checkpoint` of the tf.data
iterator per host), so that a resumed run continues on exactly the next batch. Orbax commits a step
only when all of it is written: a killed run never leaves a half checkpoint behind as the latest.
Orbax does not notice a flipped byte in an array file (it restores wrong numbers), so once a step is
committed we add `CHECKSUMS_FILE` (size and SHA-256 of each file) and check it before restoring; a step
that fails is set aside as `<step>.corrupt` and the run resumes from the one before (`restore_fallback`).
Sealing reads the whole step back (gigabytes from a bucket for T5-base), so it runs on a thread of its own
while training goes on; the next save, `wait` or `close` joins it. Sealing and checking read several files
at once.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import logging
import re
import sys
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from textchem_jax.cli import tensorflow_error
from textchem_jax.paths import absolute, write_whole

logger = logging.getLogger("textchem_jax.checkpoints")

CHECKSUMS_FILE = "textchem-checksums.json"
_CHUNK = 1 << 23
_IO_THREADS = 8


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or written; the message names the step, the file and the fix."""


def _sha256(path: epath.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _in_parallel(function: Callable[[Any], Any], items: list) -> list:
    """`function` over `items` on `_IO_THREADS` threads, results in order (the first error, in order, raised):
    on a bucket a file costs round trips more than bytes, and hashlib and the reads release the GIL. After an
    error the files not yet started are left unread."""
    pool = concurrent.futures.ThreadPoolExecutor(_IO_THREADS)
    try:
        return list(pool.map(function, items))
    finally:
        pool.shutdown(cancel_futures=True)


def _files(folder: epath.Path) -> list[epath.Path]:
    """Every file under `folder` but the checksums (one listing per folder: no recursive glob on GCS)."""
    entries = sorted(folder.iterdir())
    found = []
    for path, is_dir in zip(entries, _in_parallel(lambda path: path.is_dir(), entries)):
        if is_dir:
            found += _files(path)
        elif path.name != CHECKSUMS_FILE:
            found.append(path)
    return found


def _size_and_sha256(path: epath.Path) -> list:
    return [path.stat().length, _sha256(path)]


def seal(step_dir: str | epath.Path) -> None:
    """Writes the step's `CHECKSUMS_FILE`, whole or absent (`paths.write_whole`). Only for a committed step."""
    step_dir = epath.Path(step_dir)
    files = _files(step_dir)
    sums = dict(zip((str(p.relative_to(step_dir)) for p in files), _in_parallel(_size_and_sha256, files)))
    write_whole(step_dir / CHECKSUMS_FILE, json.dumps(sums, indent=0))


def verify(step_dir: str | epath.Path, step: int) -> None:
    """Raises CheckpointError naming the first missing, truncated or altered file of a sealed step (a step
    without `CHECKSUMS_FILE` was killed before sealing, or written by another program: orbax's own checks only)."""
    step_dir = epath.Path(step_dir)
    if not (step_dir / CHECKSUMS_FILE).exists():
        return

    def check(item: tuple[str, list]) -> None:
        path, (size, sha256) = step_dir / item[0], item[1]
        if not path.exists():
            raise CheckpointError(f"step {step}: {path} is missing")
        actual = path.stat().length
        if actual != size:
            raise CheckpointError(f"step {step}: {path} is {actual} bytes, {size} when it was saved (truncated or overwritten)")
        if _sha256(path) != sha256:
            raise CheckpointError(f"step {step}: {path} has changed since it was saved (SHA-256 differs: corrupted)")

    _in_parallel(check, list(json.loads((step_dir / CHECKSUMS_FILE).read_text()).items()))


class ProcessCountMismatch(FileNotFoundError):
    """The checkpoint was written by another number of processes: a setting to fix, not a corrupt step (no fallback;
    also raised, with its own fix, where this process's iterator file alone is missing)."""


_ITERATOR_INDEX = re.compile(r"^process_(\d+)-of-(\d+)\.index$")  # a data iterator's file, named by DataIteratorHandler


def _processes(count: int) -> str:
    return f"{count} process" if count == 1 else f"{count} processes"


def missing_iterator(directory: epath.Path, process_index: int, process_count: int) -> str:
    """Why process `process_index` of `process_count` finds no data iterator in `directory`, told from the files'
    names: the message put this run's process count where the writer's belonged ("written by 1" for a folder of
    `process_0-of-2.*` files)."""
    import tensorflow as tf

    names = tf.io.gfile.listdir(str(directory)) if tf.io.gfile.isdir(str(directory)) else []
    writers = sorted({int(match.group(2)) for name in names if (match := _ITERATOR_INDEX.match(name))})
    where = f"no data iterator for process {process_index} in {directory}"
    if writers and process_count not in writers:
        return (f"{where}: the checkpoint was written by {_processes(writers[-1])}; this run has {process_count}: "
                f"rerun with {_processes(writers[-1])} (--process_count, or the same SLURM --nodes / TPU slice)")
    return (f"{where}: the checkpoint is incomplete (it lacks process_{process_index}-of-{process_count}.index); "
            f"move {directory.parent} away to resume from the step before it")


class DataIteratorHandler(ocp.CheckpointHandler):
    """Saves/restores a `tf.data` iterator, one file per host (its own shard of the data)."""

    def _prefix(self, directory: epath.Path) -> str:
        return str(directory / f"process_{jax.process_index()}-of-{jax.process_count()}")

    def save(self, directory: epath.Path, args: DataIteratorSave) -> None:
        import tensorflow as tf

        try:
            tf.train.Checkpoint(iterator=args.iterator).write(self._prefix(directory))
        except tf.errors.OpError as error:  # e.g. ResourceExhaustedError on a full disk: an OSError for `_saving`
            message = re.sub(r"^\{\{[^}]*\}\}\s*|\s*\[Op:\w+\]$", "", error.message.strip())  # TF's op names
            raise OSError(f"writing the data iterator: {message}") from error

    def restore(self, directory: epath.Path, args: DataIteratorRestore) -> Any:
        import tensorflow as tf

        prefix = self._prefix(directory)
        if not tf.io.gfile.exists(prefix + ".index"):
            raise ProcessCountMismatch(missing_iterator(directory, jax.process_index(), jax.process_count()))
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
        self.directory = absolute(directory)  # orbax takes absolute paths only
        self.keep = keep
        _drop_callbacks_into_closed_loops()
        with _quiet_damaged_step_metadata():  # orbax reads each step's metadata here
            self.manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True),
                item_names=("state", "data_iterator"),
            )
        self._unsealed: list[int] = []  # saved, perhaps still being written: sealed once orbax has committed them
        self._sealer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="textchem-seal")
        self._sealing: dict[int, concurrent.futures.Future] = {}

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, iterator: Any | None = None) -> None:
        """Starts saving `step` (asynchronously); first finishes the save before it and starts sealing that one.

        With `keep=1` this save deletes the step before it once committed, so that step's seal is awaited first."""
        self.join_seals()
        self.wait(sealed=self.keep == 1)
        items = {"state": ocp.args.StandardSave(state)}
        if iterator is not None:
            items["data_iterator"] = DataIteratorSave(iterator)
        self._unsealed.append(step)
        with self._saving(step):
            self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, abstract_state: Any, iterator: Any | None = None, step: int | None = None, *,
                fallback: bool = True) -> tuple[Any, int] | None:  # fmt: skip
        """(state, step) of `step` (default: the latest good one), placed like `abstract_state`; None without any.

        A step that cannot be read (a checksum or orbax fails) is a CheckpointError naming its file; with
        `fallback` the steps before it are tried, and once one restores the bad ones are set aside as
        `<step>.corrupt` (kept for a post-mortem). Never a silent fresh start: if none restores, nothing moves.
        """
        fallback = fallback and step is None
        failures: list[tuple[int, CheckpointError]] = []
        for candidate in [step] if step is not None else sorted(self.manager.all_steps(), reverse=True):
            try:
                with _quiet_damaged_step_metadata():
                    restored = self._restore_step(candidate, abstract_state, iterator)
            except CheckpointError as error:
                if not fallback:
                    raise CheckpointError(f"{error}. Restore that file, move {self.directory / str(candidate)} away, "
                                          "or rerun with --restore_fallback to resume from the step before it") from None  # fmt: skip
                print(f"checkpoint {error}: trying the step before it", flush=True)
                failures.append((candidate, error))
                continue
            for bad, _ in failures if jax.process_index() == 0 else []:  # one rename of the shared folder
                aside = self._unused_corrupt_name(bad)
                (self.directory / str(bad)).rename(aside)
                print(f"checkpoint step {bad} set aside as {aside}", flush=True)
            if failures:
                if jax.process_count() > 1:  # the other hosts reload once it is done (each renaming it, all but
                    from jax.experimental import multihost_utils  # the first failed)

                    multihost_utils.sync_global_devices("textchem: damaged steps set aside")
                with _quiet_damaged_step_metadata():
                    self.manager.reload()
            logger.info("restored step %d from %s", candidate, self.directory)
            self._seal_if_never_sealed(candidate)
            return restored, candidate
        if failures:
            raise CheckpointError(f"no checkpoint in {self.directory} can be restored (the latest: {failures[0][1]}); "
                                  f"not starting from scratch: fix it, or move {self.directory} away to start afresh")  # fmt: skip
        return None

    def _seal_if_never_sealed(self, step: int) -> None:
        """Seals a restored step that has no checksums (in the background, joined as `wait`'s seals are): a run
        stopped while its last step was sealed left that step unsealed for good, and damage to it then loaded
        without a word. Its files are the ones just restored, so the checksums are theirs."""
        if jax.process_index() == 0 and not (self.directory / str(step) / CHECKSUMS_FILE).exists():
            self._sealing[step] = self._sealer.submit(seal, self.directory / str(step))

    def _unused_corrupt_name(self, step: int) -> epath.Path:
        """`<step>.corrupt`, or `<step>.corrupt-2`, -3, ... when a step saved again after a fallback is damaged again
        (the rename failed on the first one, and the run could not resume)."""
        path, number = self.directory / f"{step}.corrupt", 2
        while path.exists():
            path, number = self.directory / f"{step}.corrupt-{number}", number + 1
        return path

    def _restore_step(self, step: int, abstract_state: Any, iterator: Any | None) -> Any:
        step_dir = self.directory / str(step)
        verify(step_dir, step)
        try:
            stored = ocp.PyTreeCheckpointHandler().metadata(step_dir / "state")
            stored = getattr(stored, "tree", stored)
        except Exception as error:  # orbax, tensorstore and json raise what they raise
            raise CheckpointError(f"step {step}: {step_dir / 'state'} has unreadable metadata: {_first_line(error)}") from error
        params = abstract_state["params"] if isinstance(abstract_state, dict) else abstract_state.params
        check_shapes(_params_of(stored, self.directory, step, CheckpointError), params, f"{self.directory} (step {step})")  # not corruption
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if iterator is not None:
            items["data_iterator"] = DataIteratorRestore(iterator)
        try:
            return self.manager.restore(step, args=ocp.args.Composite(**items)).state
        except ProcessCountMismatch:
            raise
        except ValueError as error:
            if "structures do not match" not in str(error):  # orbax's words for a state of another shape of tree
                raise CheckpointError(f"step {step}: {step_dir} cannot be read: {_first_line(error)}") from error
            # The parameters matched (checked above): another optimizer, or its settings. Not a damaged step:
            # no fallback, which would call every step of the run damaged.
            raise ValueError(f"step {step} in {self.directory} holds another training state than this run's: the "
                             "optimizer (OPTIMIZER) or its settings differ from the ones it was trained with. Resume "
                             "with the run's own (its MODEL_DIR/config.gin), or start a new MODEL_DIR from its weights "
                             f"with INITIAL_CHECKPOINT_PATH='{step_dir}'") from None  # fmt: skip
        except Exception as error:
            raise CheckpointError(f"step {step}: {step_dir} cannot be read: {_first_line(error)}") from error

    def check(self) -> None:
        """Raises the CheckpointError of an asynchronous save that has failed, as soon as orbax has finished it
        (a lock read otherwise: cheap enough for every step), so that a full disk stops the run at the step it
        failed, not at the next save a checkpoint period later."""
        if jax.process_count() == 1 and self._unsealed and not self.manager.is_saving_in_progress():
            self.wait(sealed=False)  # one process only: hosts come here at different times, and a wait may sync them

    def wait(self, *, sealed: bool = True) -> None:
        """Blocks until asynchronous saves are committed and sealed; with `sealed=False` their sealing (process 0)
        goes on in the background, joined by the next save, `wait` or `close`."""
        with self._saving(self._unsealed[-1] if self._unsealed else None):
            self.manager.wait_until_finished()
        committed = [step for step in self._unsealed if step in self.manager.all_steps()]
        self._unsealed = []
        if jax.process_index() == 0:
            for step in committed:
                self._sealing[step] = self._sealer.submit(seal, self.directory / str(step))
        if sealed:
            self.join_seals()

    def join_seals(self) -> None:
        """Waits for the background seals. One that failed costs only the checksums: orbax still restores the
        step with its own checks, so training goes on (and no host waits for another in a collective)."""
        for step, sealing in sorted(self._sealing.items()):
            try:
                sealing.result()
            except Exception as error:  # whatever the filesystem raises
                print(f"checkpoint step {step} could not be sealed ({_first_line(error)}): it restores with orbax's "
                      f"own checks only, without {CHECKSUMS_FILE}", flush=True)  # fmt: skip
        self._sealing = {}

    def close(self) -> None:
        self.wait()
        self.manager.close()
        self._sealer.shutdown()

    @contextlib.contextmanager
    def _saving(self, step: int | None):
        """A failed write (full disk, quota, permissions, a bucket answering 503 past the retries) as a CheckpointError
        naming the step and the last good one. TensorFlow's errors come through etils' gs:// files (orbax's metadata)."""
        try:
            yield
        except Exception as error:
            if not isinstance(error, (OSError, ValueError, RuntimeError)) and not tensorflow_error(error):
                raise
            self._unsealed = [s for s in self._unsealed if s != step]
            good = [s for s in self.manager.all_steps() if s != step]
            last = f"step {max(good)} is intact" if good else "no earlier checkpoint exists"
            raise CheckpointError(f"saving step {step} to {self.directory} failed: {_first_line(error)}. {last}; "
                                  "free space (or fix access, or wait for the bucket) and rerun the same command to resume") from error  # fmt: skip


def _first_line(error: BaseException) -> str:
    """At most 500 characters, the end kept ("... No space left on device" comes after two long paths), without
    the JSON spec of the array that tensorstore appends."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    line = re.sub(r"\s*\[tensorstore_spec='.*'\]$", "", line)
    return line if len(line) <= 500 else f"{line[:245]} ... {line[-250:]}"


_DAMAGED_STEP_METADATA = ("Metadata file does not exist", "Failed to json parse Metadata file")


def _not_damaged_step_metadata(record: logging.LogRecord) -> bool:
    return not str(record.getMessage()).startswith(_DAMAGED_STEP_METADATA)


@contextlib.contextmanager
def _quiet_damaged_step_metadata():
    """Without orbax's log lines about a step's missing or unparsable `_CHECKPOINT_METADATA`: `restore` says which
    step and file are damaged in a line of its own. absl at INFO (`-v 0`) shows them."""
    absl = logging.getLogger("absl")
    if absl.isEnabledFor(logging.INFO) or _not_damaged_step_metadata in absl.filters:
        yield
        return
    absl.addFilter(_not_damaged_step_metadata)
    try:
        yield
    finally:
        absl.removeFilter(_not_damaged_step_metadata)


def _drop_callbacks_into_closed_loops() -> None:
    """Once a write of an asynchronous save fails, orbax closes the save's event loop while tensorstore finishes the
    step's other writes; each then reports `RuntimeError: Event loop is closed` with a traceback (a full disk printed
    660 lines while training went on). sys.unraisablehook drops those, raised in tensorstore's callback with no
    caller of ours; the failure itself reaches `wait` as one CheckpointError. Installed once, unless a command's own
    hook now sits above it (then once more: the chain passes everything on)."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_callbacks_into_closed_loops", False):
        return

    def hook(unraisable) -> None:
        traceback = unraisable.exc_traceback
        if not (unraisable.object is None and unraisable.exc_type is RuntimeError and traceback is not None
                and str(unraisable.exc_value) == "Event loop is closed"
                and traceback.tb_frame.f_code.co_name == "call_soon_threadsafe"):  # fmt: skip
            previous(unraisable)

    hook.drops_callbacks_into_closed_loops = True
    sys.unraisablehook = hook


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs with the shardings of `tree`: what orbax needs to restore into the same layout."""
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree
    )


def load_params(directory: str, abstract_params: Any, step: int | None = None, fix: Callable[[], str] | None = None,
                *, exact: bool = False) -> Any:  # fmt: skip
    """Only the parameters of a run's checkpoint, placed like `abstract_params` (ShapeDtypeStructs
    with shardings): for `INITIAL_CHECKPOINT_PATH`, evaluation and inference.

    Every parameter the model expects must be in the checkpoint with its shape (checked against the
    checkpoint's metadata before anything is read; `fix` as in `check_shapes`); a missing folder is never created.
    """
    manager = _params_manager(directory)
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {directory} (expected numbered step folders from textchem-train)")
        earlier = sorted((s for s in manager.all_steps() if s < step), reverse=True)
        if_damaged = (f"load the step before it instead: its folder is {epath.Path(directory) / str(earlier[0])}" if earlier
               else "no earlier step is saved there")  # fmt: skip
        try:
            verify(epath.Path(directory) / str(step), step)
            stored = _stored_params(manager, step, directory)
        except CheckpointError as error:
            raise CheckpointError(f"{error}; {if_damaged}") from None
        check_shapes(stored, abstract_params, f"{directory} (step {step})", fix, exact=exact)
        restore_args = jax.tree_util.tree_map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), abstract_params)
        try:
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.PyTreeRestore(
                        item={"params": abstract_params}, restore_args={"params": restore_args}, partial_restore=True
                    )
                ),
            )
        except Exception as error:  # orbax, tensorstore and json raise what they raise
            raise CheckpointError(f"step {step}: {epath.Path(directory) / str(step)} cannot be read: "
                                  f"{_first_line(error)}; {if_damaged}") from error  # fmt: skip
    finally:
        manager.close()
    return restored.state["params"]


def _params_manager(directory: str) -> ocp.CheckpointManager:
    path = absolute(directory)  # orbax takes absolute paths only
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint folder {directory} (expected the numbered steps of textchem-train)")
    with _quiet_damaged_step_metadata():  # `load_params` names the damaged step and file
        return ocp.CheckpointManager(
            path,
            item_names=("state", "data_iterator"),
            item_handlers={"state": ocp.PyTreeCheckpointHandler()},
            options=ocp.CheckpointManagerOptions(create=False),
        )


def _stored_params(manager: ocp.CheckpointManager, step: int, directory: str) -> Any:
    """The parameters' metadata tree (shapes, dtypes) of a step, read without reading any array."""
    try:
        stored = manager.item_metadata(step)["state"]
    except Exception as error:  # orbax, tensorstore and json raise what they raise
        raise CheckpointError(f"step {step}: {epath.Path(directory) / str(step) / 'state'} has unreadable metadata: "
                              f"{_first_line(error)}") from error  # fmt: skip
    return _params_of(getattr(stored, "tree", stored), directory, step)


def _params_of(stored: Any, directory: Any, step: int, error: type[Exception] = ValueError) -> Any:
    """The `params` subtree of a step's state metadata (`error` when it has none)."""
    if not isinstance(stored, dict) or "params" not in stored:
        raise error(f"the checkpoint in {directory} (step {step}) holds no parameters")
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


_OWN_CONFIG_FIX = "use the model configuration the run was trained with (its MODEL_DIR/config.gin)"


def check_shapes(stored: Any, abstract_params: Any, where: str, fix: Callable[[], str] | None = None, *,
                 exact: bool = False) -> None:  # fmt: skip
    """Every expected parameter is stored, with its shape: name the first that is not, and the fix (`fix()`,
    asked only then; by default the run's own config.gin). `exact`: nor does the checkpoint hold a parameter the
    model lacks (an e2-CLM variant's own embeddings were left unread, and it decoded as another model)."""

    def mismatch(problem: str) -> ValueError:
        return ValueError(f"{problem}: {fix() if fix else _OWN_CONFIG_FIX}")

    shapes = {
        jax.tree_util.keystr(path): tuple(getattr(leaf, "shape", ()))
        for path, leaf in jax.tree_util.tree_flatten_with_path(stored)[0]
    }
    expected = {
        jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]
    }
    for name, shape in expected.items():
        if name not in shapes:
            raise mismatch(f"parameter {name} is not in the checkpoint {where}")
        if shapes[name] != shape:
            raise mismatch(f"{name} is {shapes[name]} in {where} but {shape} in this model")
    extra = sorted(set(shapes) - set(expected)) if exact else []
    if extra:
        raise mismatch(f"the checkpoint {where} holds {len(extra)} parameter(s) this model lacks, first {extra[0]}")
