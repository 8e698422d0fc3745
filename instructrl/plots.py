"""Training curves from metrics.jsonl (matplotlib, Agg): one PNG per stage, and the grid of
every stage's curves that the evaluation report embeds. No models, no torch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from instructrl.rundir import read_metrics

Points = list[tuple[float, float]]


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def series(metrics: Path, keys: Sequence[str], *, label: str = "") -> list[tuple[str, Points]]:
    """(title, [(step, value), ...]) per key that occurs in the metrics file, in key order."""
    rows = read_metrics(metrics)
    found = [(key, [(r["step"], r[key]) for r in rows if key in r]) for key in keys]
    return [(f"{label}: {key}" if label else key, points) for key, points in found if points]


def curve_figure(panels: list[tuple[str, Points]], *, title: str, cols: int) -> Any:
    """A figure with one line chart per panel, `cols` panels a row (unused cells blank)."""
    plt = pyplot()
    cols = max(1, min(cols, len(panels)))
    n_rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.2 * cols, 3.0 * n_rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (name, points) in zip(axes.flat, panels, strict=False):
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, lw=1.4)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_curves(metrics: Path, keys: Sequence[str], png: Path, title: str) -> Path | None:
    """One panel per metric key against step; skipped when no key ever appears."""
    panels = series(metrics, keys)
    if not panels:
        return None
    fig = curve_figure(panels, title=title, cols=len(panels))
    fig.savefig(png, dpi=110)
    pyplot().close(fig)
    return png
