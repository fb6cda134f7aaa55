"""Shared plotting helpers: figure/axes handling, saving (scanpy-like ``ax=`` / ``save=``), colour scales."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np


def new_figure(nrows: int = 1, ncols: int = 1, figsize=(5, 5), **subplots):
    """A Figure of ``nrows`` x ``ncols`` Axes that pyplot no longer holds.

    Every ``pl`` function returns its Figure (or Axes) and never also shows it. A figure left open in pyplot
    is shown by Jupyter's inline backend when the cell ends, so a returned one would be shown twice. This one
    is made by pyplot (so the backend, and the notebook's way of showing a returned Figure, are set up) and
    closed at once: it is shown only where the caller shows it (a cell's last value, ``display(fig)``) and
    written only by ``save=``.

    Parameters
    ----------
    nrows, ncols
        Grid of Axes.
    figsize
        Inches (width, height).
    **subplots
        ``matplotlib.pyplot.subplots`` options (``squeeze=False``, ``sharex``, ...).

    Returns
    -------
    tuple
        ``(matplotlib.figure.Figure, Axes or array of Axes)``.
    """
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, **subplots)
    plt.close(fig)  # out of pyplot's open figures; the Figure itself still draws and saves
    return fig, axes


def get_ax(ax=None, figsize=(5, 5)):
    """``(figure, ax)`` of the caller's ``ax``, else of a new one-Axes figure (:func:`new_figure`)."""
    if ax is not None:
        return ax.figure, ax
    return new_figure(figsize=figsize)


def finish(fig, save: Path | str | None, dpi: int = 120):
    """Save atomically when ``save`` is given (PNG/SVG/PDF by suffix); return the figure.

    Nothing is shown and nothing is closed: a figure of :func:`new_figure` is already out of pyplot, and the
    figure of an ``ax=`` the caller passed is the caller's.
    """
    if save is not None:
        from .._atomic import atomic_path

        save = Path(save)
        with atomic_path(save) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=save.suffix.lstrip(".") or "png")
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


#: scale-bar lengths (µm) a bar is chosen from: round numbers a pathologist reads at a glance
BAR_LENGTHS_UM = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def bar_length_um(width_um: float, fraction: float = 0.2) -> float:
    """The round length of :data:`BAR_LENGTHS_UM` nearest (in log) to ``fraction`` of an axis ``width_um`` wide."""
    want = max(float(width_um), 1e-9) * fraction
    return float(min(BAR_LENGTHS_UM, key=lambda v: abs(np.log(v / want))))


def scale_bar(ax, pixel_size_um: float | None, scale: float = 1.0, loc: str = "lower right"):
    """A scale bar in µm on a slide picture (call it after the axis limits are set).

    Parameters
    ----------
    ax
        Axes whose data units are thumbnail pixels.
    pixel_size_um
        Level-0 µm per pixel; ``None`` (unknown) draws nothing.
    scale
        Level-0 pixels per thumbnail pixel.
    loc
        Corner of the bar.

    Returns
    -------
    mpl_toolkits.axes_grid1.anchored_artists.AnchoredSizeBar or None
        The bar (black, on a white box, labelled "500 µm"); its ``length_um`` attribute is the length in µm and
        its width in data units is ``length_um / pixel_size_um / scale``.
    """
    if pixel_size_um is None or not np.isfinite(pixel_size_um) or pixel_size_um <= 0:
        return None
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    um_per_unit = float(pixel_size_um) * float(scale)
    x0, x1 = ax.get_xlim()
    length = bar_length_um(abs(x1 - x0) * um_per_unit)
    label = f"{length:g} µm"
    bar = AnchoredSizeBar(
        ax.transData,
        length / um_per_unit,
        label,
        loc,
        pad=0.3,
        borderpad=0.4,
        sep=3,
        color="black",
        frameon=True,
        size_vertical=0,
        fontproperties=FontProperties(size=8),
    )
    bar.size_bar.get_children()[0].set_linewidth(2.5)
    bar.patch.set(facecolor="white", alpha=0.75, edgecolor="none")
    bar.length_um = length
    ax.add_artist(bar)
    return bar
