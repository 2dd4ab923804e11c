"""Line plots of runs and sweeps (matplotlib, no display): one figure maker for every plot we write.

Each figure is written as PNG (embedded in reports) and SVG (for papers) beside each other.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

from textchem_jax.paths import write_whole

Series = Mapping[str, Sequence[tuple[float, float]]]  # line label -> (x, y) points


def line_figure(panels: Mapping[str, Series], *, xlabel: str, log_x: bool = False, title: str | None = None,
                reference: float | None = None, columns: int = 3):  # fmt: skip
    """A matplotlib figure with one panel per entry of `panels` (its title -> its lines); `reference` draws
    a horizontal line (0 for gains). Points whose y is None or NaN are left out."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    columns = max(1, min(columns, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for axis, (panel, series) in zip(axes.flat, panels.items()):
        for label, points in series.items():
            kept = sorted((x, y) for x, y in points if y is not None and not math.isnan(y))
            if kept:
                axis.plot([x for x, _ in kept], [y for _, y in kept], marker="o", markersize=3, label=label)
        if reference is not None:
            axis.axhline(reference, color="gray", linewidth=0.8, linestyle="--")
        if log_x:
            axis.set_xscale("log")
            axis.tick_params(axis="x", which="minor", labelsize=6, labelrotation=30)  # within a decade: minor labels
        if not any(line.get_xdata().size for line in axis.lines):  # every value n/a: say so, not an empty frame
            axis.text(0.5, 0.5, "n/a", transform=axis.transAxes, ha="center", va="center", color="gray")
        axis.ticklabel_format(axis="y", useOffset=False)  # a flat curve read "1e-155 + 0.5": the values themselves
        if xlabel == "step":
            axis.xaxis.get_major_locator().set_params(integer=True)  # no step 19.25
        axis.set_title(panel, fontsize=9)
        axis.set_xlabel(xlabel, fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=6)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.96) if title else None)
    return figure


def save(figure, stem: str) -> tuple[str, str]:
    """Writes `stem.png` and `stem.svg` (local or gs://, each whole or not at all) and closes the figure; returns
    both paths."""
    from matplotlib import pyplot as plt

    try:
        for extension in ("png", "svg"):
            buffer = io.BytesIO()
            figure.savefig(buffer, format=extension, dpi=110)
            write_whole(f"{stem}.{extension}", buffer.getvalue())
    finally:
        plt.close(figure)
    return f"{stem}.png", f"{stem}.svg"


def plot_lines(stem: str, panels: Mapping[str, Series], **options) -> tuple[str, str] | None:
    """`line_figure` saved at `stem` (.png and .svg); None (nothing written) when there is nothing to draw."""
    if not any(points for series in panels.values() for points in series.values()):
        return None
    return save(line_figure(panels, **options), stem)
