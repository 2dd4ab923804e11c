"""What our commands share: a `~` the shell left alone expanded in their paths (argparse commands), how
they end on Ctrl-C or a file-system error (all of them, `launch.run` too): one line, not a traceback; and a
console for people (`quiet_libraries`): our lines plain, the libraries' chatter off unless asked for."""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from textchem_jax.paths import expand_user

Command = TypeVar("Command", bound=Callable[..., Any])


def parse_args(parser: Any, argv: Sequence[str] | None = None) -> Any:
    """`parser.parse_args(argv)` (argparse) with every value that starts with `~` or climbs with `..` read as
    `expand_user` reads it, kept in its type (str, epath.Path), in lists too: our commands take paths, never other
    `~` text (any other value is unchanged by it)."""

    def expanded(value: Any) -> Any:
        if isinstance(value, list):
            return [expanded(item) for item in value]
        if isinstance(value, (str, os.PathLike)) and expand_user(os.fspath(value)) != os.fspath(value):
            return type(value)(expand_user(os.fspath(value)))
        return value

    args = parser.parse_args(argv)
    for name, value in vars(args).items():
        setattr(args, name, expanded(value))
    return args


_GIN_CONTEXT = re.compile(r"\n  In call to configurable '[^']*' \(<[^\n]*>\)| in scope '[^'\n]*'(?=\n|$)")


def without_gin_context(error: BaseException) -> str:
    """The error's message without the "In call to configurable 'train' (<function train at 0x...>)" lines and
    the " in scope 'VOCABULARY'" ends gin adds to whatever a configured function raises: for the console, where
    the command already says that (a fix ending "bind VOCABULARY yourself in scope 'VOCABULARY'" read garbled)."""
    return _GIN_CONTEXT.sub("", str(error))


# TensorFlow's file-system errors (tf.io.gfile: local and gs://), told by name: cli stays free of TensorFlow. A full
# disk is ResourceExhausted; a bucket that keeps answering 503/429 past the retries is Aborted or Unavailable.
_TF_FILE_ERRORS = {"NotFoundError", "FailedPreconditionError", "PermissionDeniedError", "AlreadyExistsError",
                   "ResourceExhaustedError", "AbortedError", "UnavailableError", "DeadlineExceededError"}  # fmt: skip


def tensorflow_error(error: BaseException) -> bool:
    """Any of TensorFlow's errors (tf.errors.OpError), told without importing it."""
    return any(kind.__module__.startswith("tensorflow") and kind.__name__ == "OpError" for kind in type(error).__mro__)


def file_system_error(error: BaseException) -> bool:
    return isinstance(error, OSError) or (tensorflow_error(error) and type(error).__name__ in _TF_FILE_ERRORS)


# libcurl's words (TensorFlow's gs:// client) when no connection was made at all: DNS, proxy, refused, timed out.
# A server that closed the connection without an answer (52, 56) is one gone, as a bucket's emulator killed was.
_NO_CONNECTION = re.compile(r"Could not resolve (host|proxy)|Couldn't (connect|resolve)|Failed to connect|"
                            r"libcurl code (5|6|7|28|52|56) meaning")  # fmt: skip
# What TensorFlow wraps an op's error in: "{{function_node __wrapped__FlushSummaryWriter_device_/job:...}}" before
# it, " [Op:FlushSummaryWriter] name: " after it.
_OP_WRAPPING = re.compile(r"^\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\](?: name:.*)?$", re.S)


def file_error_line(error: BaseException) -> str:
    """A file-system error as the command's one line; where Cloud Storage was not reached at all, with what to
    check: "Could not resolve host: www.googleapis.com when reading metadata of gs://..." said no fix (a machine
    without network, a proxy or DNS that does not answer), and TensorFlow broke it over two lines."""
    message = without_gin_context(error)
    if tensorflow_error(error):
        message = " ".join(_OP_WRAPPING.sub("", message).split())
    if not _NO_CONNECTION.search(message):
        return message
    return (" ".join(message.split()) + ": Cloud Storage could not be reached (no network, or a proxy or DNS problem); "
            "check that this machine reaches storage.googleapis.com and www.googleapis.com (a proxy: HTTPS_PROXY) and "
            "that its credentials work (gcloud auth application-default login)")  # fmt: skip


def command(main: Command) -> Command:
    """`main` as a command ends: Ctrl-C in `PROGRAM: interrupted` and status 130 (128 + SIGINT, as the shell
    says it); a file-system error (a file where a folder should be, a missing or unwritable path, here or on
    gs://) in one `PROGRAM: message` line naming the path and status 2, not a traceback from where it was met."""

    @functools.wraps(main)
    def answered(*args: Any, **kwargs: Any) -> Any:
        program = os.path.basename(sys.argv[0])
        try:
            with _interrupts_kept():
                return main(*args, **kwargs)
        except KeyboardInterrupt:
            print(f"{program}: interrupted", file=sys.stderr, flush=True)
            return 130
        except Exception as error:
            if not file_system_error(error):
                raise
            print(f"{program}: {file_error_line(error)}", file=sys.stderr, flush=True)
            return 2

    return answered  # type: ignore[return-value]


def signal_again(number: int) -> threading.Timer:
    """Sends the signal `number` to this process again 50 ms from now (once a finalizer that dropped what its handler
    raised is done): a signal, not `_thread.interrupt_main`, which waits until the main thread's wait ends."""
    timer = threading.Timer(0.05, os.kill, (os.getpid(), number))
    timer.start()
    return timer


@contextlib.contextmanager
def _interrupts_kept() -> Iterator[None]:
    """A Ctrl-C that lands in a finalizer or a gc callback (JAX's `_xla_gc_callback`, a tf.data iterator's `__del__`)
    is one Python prints as "Exception ignored" and drops: the command ran on to the end and exited 0 (training 1 of
    7 times, an export 3 of 7). It is delivered again once the finalizer is done (the handler that is then in place
    acts on it), and kept off the console."""
    pending: list[threading.Timer] = []

    def dropped(unraisable) -> bool:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            pending.append(signal_again(signal.SIGINT))
            return True
        return False

    try:
        with unraisables_handled(dropped):
            yield
    finally:
        for timer in pending:  # the command is ending anyway: no interrupt after its last line
            timer.cancel()


@contextlib.contextmanager
def unraisables_handled(handler: Callable[[Any], bool]) -> Iterator[None]:
    """`handler` sees each exception Python cannot raise (in a finalizer, a gc or library callback) while this runs;
    what it does not take (returns False) goes on to the hook before. On exit that hook is put back only if ours is
    still the one installed: a filter installed meanwhile (checkpoints' of tensorstore's closed-loop callbacks) stays,
    and ours, inside it, passes everything on (restoring over it flooded the console after a failed save)."""
    active = True
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if not (active and handler(unraisable)):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        active = False
        if sys.unraisablehook is hook:
            sys.unraisablehook = previous


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type`: an integer no smaller than `minimum` (argparse names the flag in its error)."""

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    integer.__name__ = f"integer >= {minimum}"
    return integer


_CHATTER = (
    # seqio warns per task that an uncached source "reshuffles on restarts": our checkpoints keep each
    # host's data-iterator position, so a resumed run continues on exactly the next batch.
    "Using an uncached FunctionDataset",
    "Given sequence lengths are longer than necessary",  # seqio: eval lengths above the split's longest
    "Given sequence lengths *may be* insufficient",  # seqio: evaluator.cut_examples counts the cut ones instead
    # seqio's feature converter, packing a single task: its text features are not model features, by design.
    "will be removed during packing",
    # orbax, when a save waits for the one before (a short checkpoint period): the step goes on once it is done.
    "Waiting for previous save to complete took",
    # orbax, loading a training checkpoint's parameters for evaluation: its data-iterator position is not needed.
    'Item "data_iterator" was found in the checkpoint, but could not be restored',
    # orbax's background save threads log each failed write with its traceback; the failure reaches us and
    # is reported once, as a CheckpointError naming the step and the last good one (`checkpoints.Checkpoints`).
    "_SignalingThread.run() raised an exception",
    "Handler Commit operations or the Commit callback in background save thread",
    "Save Finalize thread (save_finalize) failed",
    # orbax, saving a step whose unfinished temporary folder a killed run left: it removes it and saves anew.
    "Removing existing directory since it is not finalized",
    # seqio, as a mixture's task fails to load (a Ctrl-C while it loads): the exception itself follows, said once.
    "as part of mixture",
)


def _quiet_library_chatter(record) -> bool:
    return not any(text in str(record.getMessage()) for text in _CHATTER)


def _import_tensorflow_quietly() -> None:
    """TensorFlow's C++ start-up lines (oneDNN, CUDA drivers) ignore TF_CPP_MIN_LOG_LEVEL since 2.18:
    its import and its device probe run with the process's stderr pointed at /dev/null (Python errors still
    raise)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:  # local only: the null device
            os.dup2(devnull.fileno(), 2)
            import tensorflow

            tensorflow.config.list_physical_devices("GPU")  # its CUDA probe's "failed call to cuInit" goes here too
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class PlainForOurs(logging.Formatter):
    """absl's console format for the libraries' records; ours read as lines for people ("warning: ..."), not
    `W1206 10:24:08.565603 140366921472896 train.py:68] ...`."""

    def __init__(self, theirs: logging.Formatter | None):
        super().__init__()
        self.theirs = theirs or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        if record.name.split(".")[0] in ("textchem_jax", "tasks"):
            return f"{record.levelname.lower()}: {record.getMessage()}"
        return self.theirs.format(record)


def console_handler() -> logging.Handler:
    """stderr for the argparse commands: ours as `warning: ...`, a library's as `WARNING name: ...`."""
    console = logging.StreamHandler()
    console.setFormatter(PlainForOurs(logging.Formatter("%(levelname)s %(name)s: %(message)s")))
    return console


# What `import jax` sets TF_CPP_MIN_LOG_LEVEL to where it is unset (TensorFlow's warnings on): not a user's choice.
# Kept (a setdefault), it let a user's TFDS-backed SeqIO task print TensorFlow's "cache_dataset_ops.cc:912] The
# calling iterator did not fully read the dataset being cached" 4 times per evaluation (SeqIO caches a small split
# in memory; evaluation reads its first batches).
_JAX_TF_LOG_LEVEL = "1"


def quiet_libraries() -> None:
    """The console for people: TensorFlow's start-up lines, absl's INFO logs and known seqio chatter off, and
    our own warnings without absl's prefix."""
    from absl import logging as absl_logging

    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", _JAX_TF_LOG_LEVEL) == _JAX_TF_LOG_LEVEL:  # a user's 0 or 3 is kept
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("absl").addFilter(_quiet_library_chatter)
    handler = absl_logging.get_absl_handler()
    if not isinstance(handler.python_handler.formatter, PlainForOurs):
        handler.setFormatter(PlainForOurs(handler.python_handler.formatter))
    if not logging.root.handlers:  # an argparse command (absl.app puts its handler there): a library's later
        logging.root.addHandler(console_handler())  # logging.basicConfig() printed ours as `WARNING:textchem_jax...`
    for console in logging.root.handlers:  # one a library's basicConfig() put there first reads ours plainly too
        if type(console) is logging.StreamHandler and not isinstance(console.formatter, PlainForOurs):
            console.setFormatter(PlainForOurs(console.formatter))
    _import_tensorflow_quietly()
