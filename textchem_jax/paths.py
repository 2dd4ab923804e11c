"""User paths: local or remote (`gs://` and other `scheme://`), told apart by one rule, local ones made
what the libraries below expect, and folders made without TensorFlow's endless loop on a missing bucket.

Orbax refuses relative paths ("Checkpoint path should be absolute"), so a `MODEL_DIR="'runs/x'"` or a
`CHECKPOINT_PATH` relative to the working directory is made absolute before any checkpoint library sees it;
a `~` that the shell left alone (`--output_dir=~/x`) is expanded (`cli.parse_args` does it for our commands).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from etils import epath


CHECKPOINTS_FOLDER = "checkpoints"  # inside a MODEL_DIR: one numbered folder per saved step
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_BUCKETS_SEEN: set[str] = set()  # gs:// buckets found to exist (makedirs)


def is_remote(path: str | os.PathLike) -> bool:
    """True for `gs://bucket/...` and any other path that starts with `scheme://` (read through tf.io.gfile or
    etils.epath); a local path with `://` inside (gin joining `gs://x.gin` onto a search path) is local."""
    return _SCHEME.match(str(path)) is not None


def expand_user(path: str) -> str:
    """`~/x` as the shell would give it: a `--flag=~/x` reaches us unexpanded (bash expands only `--flag ~/x`),
    and tf.io.gfile would make a folder named `~` in the working directory. A local `..` is resolved as the kernel
    does (after a symlink it climbs from the link's target): tf.io.gfile drops `a/..` as text, and a run wrote its
    lock and predictions in one folder, its checkpoints in another. Remote paths are left as they are."""
    if is_remote(path):
        return path
    path = os.path.expanduser(path)
    return os.path.realpath(path) if ".." in re.split(r"[/\\]", path) else path


def absolute(path: str | os.PathLike) -> epath.Path:
    """A local path made absolute against the working directory; remote paths are already absolute
    (epath's resolve() would prefix them with the working directory)."""
    from etils import epath  # 80 ms: only where a path is made absolute, not for `is_remote`

    path = epath.Path(path)
    return path if is_remote(path) else path.resolve()


def makedirs(path: str | os.PathLike) -> None:
    """A folder and its parents, local or remote. On `gs://`, the bucket is checked first: TensorFlow's recursive
    create climbs to the bucket's root, finds it missing and climbs again forever (no error, Ctrl-C ignored)."""
    path = str(path)
    if not is_remote(path):
        try:
            os.makedirs(path, exist_ok=True)  # local: no TensorFlow import for it
        except FileExistsError:  # said "[Errno 17] File exists", naming the path but not the problem
            raise FileExistsError(f"{path} is a file, not a folder: give a folder's path, or move the file") from None
        return
    import tensorflow as tf  # remote paths only go through tf.io.gfile

    if problem := missing_bucket(path):
        raise FileNotFoundError(problem)
    tf.io.gfile.makedirs(path)


def missing_bucket(path: str | os.PathLike) -> str | None:
    """What is wrong with a gs:// path's bucket, with the fix, or None (it answers, or the path is not on gs://)."""
    path = str(path)
    if not path.startswith("gs://"):
        return None
    import tensorflow as tf

    bucket = "gs://" + path[len("gs://"):].split("/", 1)[0]
    if bucket not in _BUCKETS_SEEN and not tf.io.gfile.exists(bucket):
        return (f"{path}: the bucket {bucket} does not exist or these credentials cannot see it; "
                f"create it (gcloud storage buckets create {bucket}) or correct the path")  # fmt: skip
    _BUCKETS_SEEN.add(bucket)  # one request per bucket and process: a run makes its folders many times
    return None


def write_whole(path: str | os.PathLike, data: str | bytes) -> None:
    """`data` in the file at `path` (local or remote), whole or not at all: written beside it under a name of this
    process's own, then renamed over it. A full disk, a quota or a SIGKILL mid-write leaves the file as it was (a
    figure cut at 24 KiB, an emptied scores.json, a record without its end); a failed write removes its partial file
    (a SIGKILL leaves it). TensorFlow's errors become an OSError naming `path` (a file-size limit is its
    OutOfRangeError)."""
    import uuid

    import tensorflow as tf

    path = str(path)
    partial = f"{path}.partial-{uuid.uuid4().hex[:12]}"  # two writers of one file never mix their bytes
    try:
        with tf.io.gfile.GFile(partial, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        tf.io.gfile.rename(partial, path, overwrite=True)
    except BaseException as error:
        try:
            tf.io.gfile.remove(partial)
        except Exception:  # never written, or the file system is gone: the first error is the one to tell
            pass
        if isinstance(error, tf.errors.OpError):
            raise OSError(f"writing {path} failed: {error.message.replace(f'{partial}; ', '')}") from None
        raise


def check_writable_folder(path: str, name: str) -> None:
    """Refuses, before any long setup, a `path` (`name`: the flag or macro that gave it) that is a file or lies in a
    local folder this process cannot write (a read-only mount): training said so minutes later, after it started."""
    import tensorflow as tf

    if is_remote(path):
        if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
            raise FileExistsError(f"{name} {path} is a file, not a folder: give a folder's path, or move the file")
        return
    existing = os.path.abspath(path)  # local only
    while not os.path.exists(existing):  # local only
        existing = os.path.dirname(existing)  # local only
    if not os.path.isdir(existing):  # local only
        raise FileExistsError(f"{name} {path}: {existing} is a file, not a folder: give a folder's path, or move the file")
    if not os.access(existing, os.W_OK):  # local only
        raise PermissionError(f"{name} {path}: {existing} cannot be written by this user (read-only or another's): "
                              "give a folder you can write to")  # fmt: skip
