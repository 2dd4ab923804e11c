"""What produced a figure: the libraries' versions, our code's revision, the command and the machine.

Written beside what a run, an evaluation or an inference leaves (`provenance.json`: a list, one entry each time a
command wrote there; not `.jsonl`, which textchem-score would read as predictions), and read back by the reports:
the versions that computed a metric, not those of the process that renders it (RDKit alone moved MolT5-large's
rdk_fts from 0.8125 to 0.8071 between releases).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence

from textchem_jax.metrics.tables import METRIC_PACKAGES, library_versions
from textchem_jax.paths import makedirs, write_whole

FILE = "provenance.json"
STACK_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "seqio", "tensorflow", "sentencepiece")


def versions(extra: Sequence[str] = ()) -> dict[str, str]:
    """{package: version} of the training stack, the metric libraries and `extra` (torch, transformers)."""
    return library_versions((*STACK_PACKAGES, *METRIC_PACKAGES, *extra))


def revision() -> str | None:
    """Our checkout's commit (`+changes` when files differ from it); None for an installed wheel, whose version
    says it. Every commit of an editable install reads as the same package version."""
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(checkout, "setup.py")):  # local only: the package's own folder
        return None
    try:
        git = ["git", "-C", checkout]
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
        status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, timeout=10, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+changes" if status.stdout.strip() else "")


def machine() -> str:
    """The CPU (model name, cores) and, where JAX is loaded, its devices."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:  # local only: the kernel's, not a user path
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    described = f"{cpu}, {os.cpu_count()} cores"
    jax = sys.modules.get("jax")
    if jax is not None and _backend_running():  # never started here: on a GPU it would take most of the memory
        devices = jax.devices()
        described += f"; {len(devices)} x {devices[0].device_kind} ({jax.process_count()} process(es))"
    return described


def _backend_running() -> bool:
    try:
        from jax._src import xla_bridge

        return xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):  # another JAX: the devices go unsaid rather than started
        return False


def record(extra_packages: Sequence[str] = (), **settings) -> dict:
    """This process's provenance, with the `settings` that reproduce its figure (checkpoint step, decoder...)."""
    return {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": shlex.join([os.path.basename(sys.argv[0]), *sys.argv[1:]]), "revision": revision(),
            "machine": machine(), "python": platform.python_version(), "versions": versions(extra_packages),
            **settings}  # fmt: skip


def append(folder: str, **settings) -> dict:
    """`record(**settings)` added to `folder`'s provenance file (rewritten whole, through a temporary file: gs:// has
    no append, and a write cut short leaves the entries before). Call it from one process."""
    entry = record(**settings)
    makedirs(folder)
    path = os.path.join(folder, FILE)
    write_whole(path, json.dumps([*history(folder), entry], indent=1, default=str) + "\n")
    return entry


def history(folder: str) -> list[dict]:
    """Every entry of `folder`'s provenance file, oldest first ([] without one, or one that does not parse)."""
    import tensorflow as tf

    path = os.path.join(folder, FILE)
    try:
        with tf.io.gfile.GFile(path) as f:
            entries = json.loads(f.read())
    except (tf.errors.NotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return []
    return [entry for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []


def changed(recorded: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """{package: (recorded, installed now)} for each recorded version that differs from this environment's."""
    now = library_versions(tuple(recorded))
    return {package: (then, now[package]) for package, then in recorded.items() if now[package] != then}


def decoder(decode_fn) -> str:
    """A decode function as a reader of the record needs it: its name and bound settings (`beam_size=10`)."""
    if decode_fn is None:
        return "greedy (the model's default)"
    keywords = dict(getattr(decode_fn, "keywords", None) or {})
    function = getattr(decode_fn, "func", decode_fn)
    name = f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', repr(function))}".lstrip(".")
    return name + (f"({', '.join(f'{k}={v!r}' for k, v in keywords.items())})" if keywords else "")


def versions_line(extra: Sequence[str] = ()) -> str:
    """One console line: every version `versions` gives, our revision, and the machine (benchmarks print it)."""
    listed = ", ".join(f"{name} {version}" for name, version in versions(extra).items())
    return f"versions: {listed}; textchem_jax revision {revision() or 'n/a'}; {machine()}"
