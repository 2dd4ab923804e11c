"""How metric results reach people: one table printer (console and Markdown), and the versions that move metric values
(RDKit's fingerprints moved rdk_fts by 0.005 between releases), printed beside every table we report."""

from __future__ import annotations

import importlib
import importlib.metadata
import math
from collections.abc import Mapping, Sequence

METRIC_PACKAGES = ("rdkit", "nltk", "rouge-score", "rapidfuzz", "textchem_jax")  # what moves metric values
# Packages whose releases go by the module's own version, not pip's normalized spelling of it: RDKit's release
# 2026.09.1 (`rdkit.__version__`, what RDKit's notes and bug reports name) is 2026.9.1 to pip.
_OWN_VERSION = {"rdkit": "rdkit"}


def library_versions(packages: Sequence[str] = METRIC_PACKAGES) -> dict[str, str]:
    """{package: installed version or "not installed"}: every table's and every metrics file's versions."""
    versions = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
            continue
        if package in _OWN_VERSION:
            try:
                versions[package] = str(importlib.import_module(_OWN_VERSION[package]).__version__)
            except (ImportError, AttributeError):  # pip's version stands
                pass
    return versions


def versions_line() -> str:
    return "metric libraries: " + ", ".join(f"{name} {version}" for name, version in library_versions().items())


def not_computed(value) -> bool:
    """Whether a metric value stands for n/a: None, or the NaN that SeqIO's loggers take instead."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value) -> str:
    """A metric value as every table prints it: 4 decimals, or n/a when it could not be computed (None, NaN). A value
    that rounds to zero is 0.0000: a robustness drop of -1e-155 (BLEU's zero-overlap floor) read "drop -0.0000"."""
    if not_computed(value):
        return "n/a"
    text = f"{value:.4f}"
    return "0.0000" if text == "-0.0000" else text


def format_table(results: Mapping[str, Mapping[str, float | None]], examples: Mapping[str, int] | None = None) -> str:
    """A per-task metric table; a metric that could not be computed (None or NaN) shows as n/a. `examples`, the
    rows each task was scored on, heads its task (a restricted evaluation is not a paper's denominator)."""
    lines = []
    for task, metrics in sorted(results.items()):
        count = examples.get(task) if examples else None
        lines.append(task if count is None else f"{task} ({count:,} example{'' if count == 1 else 's'})")
        lines += [f"  {name:<26}{number(value)}" for name, value in metrics.items()]
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown (GitHub) table of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# Metrics where a smaller value is better: their "drop" under another notation is an increase.
LOWER_IS_BETTER = ("levenshtein", "invalid_rate")


def change(metric: str, original, value) -> float | None:
    """The drop from the original (positive: worse), for higher-is-better and lower-is-better metrics alike."""
    if not_computed(original) or not_computed(value):
        return None
    return (value - original) if metric in LOWER_IS_BETTER else (original - value)


def robustness_tables(results: Mapping) -> list[tuple[str, list[str], list[list]]]:
    """(title, header, rows) per table: each task's metrics per notation with the drop from the original
    ("value (drop d)"), then each task's embedding check. One layout for the console, Markdown and HTML."""
    tables = []
    for task, by_variant in results["metrics"].items():
        original = by_variant.get("original", {})
        metrics = list(original)
        rows = []
        for variant, values in by_variant.items():
            cells = [number(values.get(m)) if variant == "original" else
                     f"{number(values.get(m))} (drop {number(change(m, original.get(m), values.get(m)))})" for m in metrics]  # fmt: skip
            rows.append([variant, *cells])
        tables.append((task, ["notation", *metrics], rows))
    for task, by_variant in results.get("embedding", {}).items():
        rows = [[v, *(number(s[k]) for k in ("acc@1", "acc@5", "mrr", "unchanged"))] for v, s in by_variant.items()]
        title = f"{task}: embedding retrieval (encoder mean-pooled, cosine, {results['embedding_molecules'][task]} molecules)"
        tables.append((title, ["notation", "acc@1", "acc@5", "MRR", "unchanged"], rows))
    return tables


def robustness_markdown(results: Mapping) -> str:
    """Markdown of `robustness_tables`, with the drop explained once."""
    parts = [f"drop: original minus notation (for {', '.join(LOWER_IS_BETTER)}: the increase); "
             "unchanged: the share of inputs the notation writes exactly as the split does"]  # fmt: skip
    unreadable = {task: n for task, n in results.get("unreadable_inputs", {}).items() if n}
    if unreadable:
        parts.append("inputs RDKit cannot read, kept as written in every notation: "
                     + ", ".join(f"{task} {n}" for task, n in unreadable.items()))  # fmt: skip
    parts += [f"**{title}**\n\n{markdown_table(header, rows)}" for title, header, rows in robustness_tables(results)]
    return "\n\n".join(parts)
