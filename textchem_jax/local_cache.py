"""This machine's cache folder for textchem_jax (layer 0: standard library only).

Everything we cache locally (the generated demo corpus, parsed source files, WordNet indexes, compiled XLA
executables) lives under one root: `$XDG_CACHE_HOME/textchem_jax`, `~/.cache/textchem_jax` when that is unset
or empty (as the XDG spec reads it). It is never a user's path: the user names none of it.
"""

from __future__ import annotations

import os
import pathlib


def cache_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "textchem_jax"  # local only
