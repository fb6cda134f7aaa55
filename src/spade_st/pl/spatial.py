"""Pictures on the tissue: routing maps, measured vs predicted genes, ABMIL attention heatmaps."""

from __future__ import annotations

import numpy as np

from ._util import categorical_colors, finish, get_ax, plt


def routing_map(
    thumb: np.ndarray, xy: np.ndarray, weights: np.ndarray, spot_px: float = 8, title: str = "", ax=None, save=None
):
    """Dominant expert per spot (colour) and its weight (opacity) over the H&E thumbnail.

    ``xy`` are spot centres in thumbnail pixels; ``weights`` the (N, E) routing weights.
    """
    fig, ax = get_ax(ax, (6, 6))
    ax.imshow(thumb)
    dom = weights.argmax(1)
    cols = np.array(categorical_colors(weights.shape[1]))[dom]
    cols[:, 3] = 0.25 + 0.75 * weights.max(1)
    ax.scatter(xy[:, 0], xy[:, 1], s=spot_px**2, c=cols, linewidths=0)
    for e in np.unique(dom):
        ax.scatter([], [], color=categorical_colors(weights.shape[1])[e], label=f"expert {e}")
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), fontsize=7, frameon=False)
    ax.set_axis_off()
    ax.set_title(title or "dominant expert (opacity = weight)")
    return finish(fig, save)


def gene_maps(
    thumb: np.ndarray,
    xy: np.ndarray,
    measured: np.ndarray,
    predicted: np.ndarray,
    genes: list[str],
    spot_px: float = 8,
    save=None,
):
    """Measured (top row) and predicted (bottom row) expression of ``genes`` side by side on the tissue."""
    n = len(genes)
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 6.4), squeeze=False)
    for j, g in enumerate(genes):
        lo, hi = np.percentile(measured[:, j], [2, 98])
        for row, (vals, lab) in enumerate(((measured[:, j], "measured"), (predicted[:, j], "predicted"))):
            ax = axes[row, j]
            ax.imshow(thumb, alpha=0.6)
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=vals, s=spot_px**2, cmap="magma", vmin=lo, vmax=hi, linewidths=0)
            ax.set_axis_off()
            ax.set_title(f"{g} ({lab})", fontsize=9)
        fig.colorbar(sc, ax=axes[:, j], shrink=0.6)
    return finish(fig, save)


def attention_heatmap(
    thumb: np.ndarray,
    coords: np.ndarray,
    attention: np.ndarray,
    patch_level0: float,
    scale: float,
    title: str = "ABMIL attention",
    ax=None,
    save=None,
):
    """Attention of each tile over the slide thumbnail.

    ``coords`` are level-0 top-left corners (extract-wsi), ``patch_level0`` the tile side in level-0 pixels,
    ``scale`` = level-0 pixels per thumbnail pixel.
    """
    fig, ax = get_ax(ax, (6, 6))
    ax.imshow(thumb)
    heat = np.full(thumb.shape[:2], np.nan)
    a = np.asarray(attention, dtype=float)
    a = (a - a.min()) / (a.max() - a.min() + 1e-12)
    side = max(1, round(patch_level0 / scale))
    for (x, y), v in zip(np.asarray(coords) / scale, a, strict=True):
        heat[int(y) : int(y) + side, int(x) : int(x) + side] = v
    im = ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.6, label="attention (min-max)")
    ax.set_axis_off()
    ax.set_title(title)
    return finish(fig, save)
