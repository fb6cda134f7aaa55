"""Shared plotting helpers: figure/axes handling and saving (scanpy-like ``ax=`` / ``save=``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt


def get_ax(ax=None, figsize=(5, 5)):
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def finish(fig, save: Path | str | None, dpi: int = 120):
    """Save atomically when ``save`` is given (PNG/SVG/PDF by suffix); return the figure."""
    if save is not None:
        from .._atomic import atomic_path

        save = Path(save)
        with atomic_path(save) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=save.suffix.lstrip(".") or "png")
        plt.close(fig)
    return fig


def categorical_colors(n: int):
    cmap = plt.get_cmap("tab20" if n > 10 else "tab10")
    return [cmap(i % cmap.N) for i in range(n)]
