"""Slide-level pictures: ABMIL attention over a whole-slide thumbnail."""

from __future__ import annotations

import numpy as np

from ._util import finish, get_ax, scale_bar


def attention_heatmap(
    thumb: np.ndarray,
    coords: np.ndarray,
    attention: np.ndarray,
    patch_level0: float,
    scale: float,
    title: str = "ABMIL attention",
    ax=None,
    save=None,
    pixel_size_um: float | None = None,
):
    """Attention of each tile over the slide thumbnail.

    ``coords`` are level-0 top-left corners (extract-wsi), ``patch_level0`` the tile side in level-0 pixels,
    ``scale`` = level-0 pixels per thumbnail pixel, ``pixel_size_um`` the level-0 µm per pixel (when given: a
    scale bar in µm).
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
    scale_bar(ax, pixel_size_um, scale)
    return finish(fig, save)
