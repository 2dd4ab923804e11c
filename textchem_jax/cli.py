"""What our commands share: a `~` the shell left alone expanded in their paths (argparse commands), and how
they end on Ctrl-C or a file-system error (all of them, `launch.run` too): one line, not a traceback."""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from textchem_jax.paths import expand_user

Command = TypeVar("Command", bound=Callable[..., Any])


def parse_args(parser: Any, argv: Sequence[str] | None = None) -> Any:
    """`parser.parse_args(argv)` (argparse) with every value that starts with `~` expanded as `expand_user`
    does, kept in its type (str, epath.Path), in lists too: our commands take paths, never other `~` text."""

    def expanded(value: Any) -> Any:
        if isinstance(value, list):
            return [expanded(item) for item in value]
        if isinstance(value, (str, os.PathLike)) and os.fspath(value).startswith("~"):
            return type(value)(expand_user(os.fspath(value)))
        return value

    args = parser.parse_args(argv)
    for name, value in vars(args).items():
        setattr(args, name, expanded(value))
    return args


_GIN_CONTEXT = re.compile(r"\n  In call to configurable '[^']*' \(<[^\n]*>\)")


def without_gin_context(error: BaseException) -> str:
    """The error's message without the "In call to configurable 'train' (<function train at 0x...>)" lines gin
    adds to whatever a configured function raises: for the console, where the command already says that."""
    return _GIN_CONTEXT.sub("", str(error))


# TensorFlow's file-system errors (tf.io.gfile: local and gs://), told by name: cli stays free of TensorFlow.
_TF_FILE_ERRORS = {"NotFoundError", "FailedPreconditionError", "PermissionDeniedError", "AlreadyExistsError"}


def _file_system_error(error: BaseException) -> bool:
    kind = type(error)
    return isinstance(error, OSError) or (kind.__module__.startswith("tensorflow") and kind.__name__ in _TF_FILE_ERRORS)


def command(main: Command) -> Command:
    """`main` as a command ends: Ctrl-C in `PROGRAM: interrupted` and status 130 (128 + SIGINT, as the shell
    says it); a file-system error (a file where a folder should be, a missing or unwritable path, here or on
    gs://) in one `PROGRAM: message` line naming the path and status 2, not a traceback from where it was met."""

    @functools.wraps(main)
    def answered(*args: Any, **kwargs: Any) -> Any:
        program = os.path.basename(sys.argv[0])
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            print(f"{program}: interrupted", file=sys.stderr, flush=True)
            return 130
        except Exception as error:
            if not _file_system_error(error):
                raise
            print(f"{program}: {without_gin_context(error)}", file=sys.stderr, flush=True)
            return 2

    return answered  # type: ignore[return-value]


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
