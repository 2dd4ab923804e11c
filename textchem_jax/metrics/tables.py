"""How metric results reach people: one table printer (console and Markdown), and the versions that move metric values
(RDKit's fingerprints moved rdk_fts by 0.005 between releases), printed beside every table we report."""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Mapping, Sequence

_PACKAGES = ("rdkit", "nltk", "rouge-score", "rapidfuzz", "textchem_jax")


def library_versions() -> dict[str, str]:
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def versions_line() -> str:
    return "metric libraries: " + ", ".join(f"{name} {version}" for name, version in library_versions().items())


def format_table(results: Mapping[str, Mapping[str, float | None]]) -> str:
    """A per-task metric table; a metric that could not be computed (None or NaN) shows as n/a."""
    lines = []
    for task, metrics in sorted(results.items()):
        lines.append(task)
        for name, value in metrics.items():
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            lines.append(f"  {name:<26}{'n/a' if missing else f'{value:.4f}'}")
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown (GitHub) table of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
