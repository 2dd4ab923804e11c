"""What our argparse commands share: a `~` the shell left alone expanded in their paths, and Ctrl-C ending in
one line and status 130, as the gin commands end (`launch.run`), not in a traceback from wherever the command was."""

from __future__ import annotations

import argparse
import functools
import os
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


def interruptible(main: Command) -> Command:
    """`main` with Ctrl-C answered by `PROGRAM: interrupted` on stderr and status 130 (128 + SIGINT, the shell's)."""

    @functools.wraps(main)
    def answered(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            print(f"{os.path.basename(sys.argv[0])}: interrupted", file=sys.stderr, flush=True)
            return 130

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
