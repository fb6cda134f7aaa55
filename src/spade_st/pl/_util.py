"""Shared plotting helpers: figure/axes handling, saving (scanpy-like ``ax=`` / ``save=``), colour scales."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np


def get_ax(ax=None, figsize=(5, 5)):
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def finish(fig, save: Path | str | None, dpi: int = 120):
    """Save atomically when ``save`` is given (PNG/SVG/PDF by suffix) and close the figure; return it."""
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


def robust_limits(values: np.ndarray, lo: float = 2, hi: float = 98) -> tuple[float, float]:
    """Colour limits of one panel: its own 2nd-98th percentiles (never a scale shared with another panel)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if not len(v):
        return 0.0, 1.0
    a, b = np.percentile(v, [lo, hi])
    return (float(a), float(b)) if b > a else (float(v.min()), float(v.min()) + 1e-6 + float(np.ptp(v)))
