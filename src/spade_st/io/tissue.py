"""Tissue detection on a slide thumbnail and the 224 px / 0.5 µm/px tile grid over the tissue."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .._keys import PATCH_PIXEL_SIZE_UM, PATCH_SIZE
from .patches import patch_scale
from .wsi import WSI


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D array (maximises the between-class variance)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    hist, edges = np.histogram(v, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between))])


def tissue_mask(wsi: WSI, thumb_size: int = 2048, min_area_frac: float = 1e-4) -> tuple[np.ndarray, float]:
    """Boolean tissue mask of a thumbnail and its scale (level-0 pixels per mask pixel).

    Tissue = saturation above Otsu's threshold (and not near-black), closed, holes filled, with specks
    smaller than ``min_area_frac`` of the thumbnail removed.
    """
    thumb = wsi.get_thumbnail(thumb_size).astype(np.float32) / 255.0
    mx, mn = thumb.max(axis=2), thumb.min(axis=2)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0)
    thr = max(otsu_threshold(sat), 0.05)
    mask = (sat > thr) & (mx > 0.1)
    mask = ndimage.binary_closing(mask, iterations=2)
    mask = ndimage.binary_fill_holes(mask)
    lab, n = ndimage.label(mask)
    if n:
        sizes = ndimage.sum(mask, lab, index=np.arange(1, n + 1))
        keep = np.flatnonzero(sizes >= min_area_frac * mask.size) + 1
        mask = np.isin(lab, keep)
    scale = wsi.dimensions[0] / mask.shape[1]
    return mask, scale


def tile_grid(
    wsi: WSI,
    mask: np.ndarray,
    mask_scale: float,
    size: int = PATCH_SIZE,
    out_um: float = PATCH_PIXEL_SIZE_UM,
    min_tissue: float = 0.25,
    return_fraction: bool = False,
):
    """Level-0 top-left corners (N, 2) of non-overlapping tiles with at least ``min_tissue`` tissue (and, with
    ``return_fraction``, each tile's tissue fraction (N,) float32)."""
    step = size * patch_scale(wsi.pixel_size_um, out_um)
    w0, h0 = wsi.dimensions
    xs = np.arange(0, w0 - step + 1e-9, step)
    ys = np.arange(0, h0 - step + 1e-9, step)
    if len(xs) == 0 or len(ys) == 0:
        empty = np.zeros((0, 2), np.int64)
        return (empty, np.zeros(0, np.float32)) if return_fraction else empty
    integral = np.pad(mask.astype(np.float64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    gx, gy = np.meshgrid(xs, ys)
    x0 = np.clip(np.floor(gx / mask_scale).astype(int), 0, mask.shape[1])
    y0 = np.clip(np.floor(gy / mask_scale).astype(int), 0, mask.shape[0])
    x1 = np.clip(np.ceil((gx + step) / mask_scale).astype(int), 0, mask.shape[1])
    y1 = np.clip(np.ceil((gy + step) / mask_scale).astype(int), 0, mask.shape[0])
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    tissue = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    frac = tissue / area
    keep = frac >= min_tissue
    corners = np.stack([gx[keep], gy[keep]], axis=1).round().astype(np.int64)
    return (corners, frac[keep].astype(np.float32)) if return_fraction else corners
