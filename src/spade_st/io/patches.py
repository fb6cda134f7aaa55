"""Spot-centred patches resampled to a fixed pixel size (224 px at 0.5 µm/px by default).

Geometry (the part HEST users get wrong most often): a pixel ``i`` covers the interval ``[i, i+1)``, so a
spot centre ``(cx, cy)`` in level-0 pixels is a point on that continuous grid. A patch of ``P`` output pixels
at ``out_um`` µm/px spans ``P * s`` level-0 pixels with ``s = out_um / level0_um``; its box is
``[cx - P*s/2, cx + P*s/2)``, so the spot centre falls exactly on the patch's centre point ``(P/2, P/2)``
(the corner shared by the four middle pixels). ``coords`` stores the box's top-left rounded to integer
level-0 pixels, as HEST-1k does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from PIL import Image

from .._keys import PATCH_PIXEL_SIZE_UM, PATCH_SIZE
from .wsi import WSI


def patch_scale(level0_um: float, out_um: float = PATCH_PIXEL_SIZE_UM) -> float:
    """Level-0 pixels per output pixel."""
    return float(out_um) / float(level0_um)


def patch_box(center: tuple[float, float], scale: float, size: int = PATCH_SIZE) -> tuple[float, float, float, float]:
    """Continuous level-0 box (x0, y0, x1, y1) of the patch centred on ``center``."""
    half = size * scale / 2.0
    cx, cy = float(center[0]), float(center[1])
    return cx - half, cy - half, cx + half, cy + half


def extract_patch(
    wsi: WSI,
    center: tuple[float, float],
    out_um: float = PATCH_PIXEL_SIZE_UM,
    size: int = PATCH_SIZE,
) -> np.ndarray:
    """One RGB uint8 patch (size, size, 3) centred on ``center`` (level-0 pixels), resampled to ``out_um``.

    Reads from the deepest pyramid level that still has at least the output resolution, then resamples with
    an antialiased bicubic filter (PIL) over the exact fractional box. Outside the slide is white.
    """
    scale = patch_scale(wsi.pixel_size_um, out_um)
    level = wsi.best_level_for_downsample(max(scale, 1.0))
    ds = wsi.level_downsamples[level]
    x0, y0, x1, y1 = (v / ds for v in patch_box(center, scale, size))
    pad = 3  # room for the bicubic kernel support
    ix0, iy0 = math.floor(x0) - pad, math.floor(y0) - pad
    ix1, iy1 = math.ceil(x1) + pad, math.ceil(y1) + pad
    region = wsi.read_region((round(ix0 * ds), round(iy0 * ds)), level, (ix1 - ix0, iy1 - iy0))
    img = Image.fromarray(region)
    box = (x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0)
    out = img.resize((size, size), Image.Resampling.BICUBIC, box=box)
    return np.asarray(out)


def patch_coords(
    centers: np.ndarray, level0_um: float, out_um: float = PATCH_PIXEL_SIZE_UM, size: int = PATCH_SIZE
) -> np.ndarray:
    """Integer level-0 top-left corners (N, 2) of the patches centred on ``centers``."""
    half = size * patch_scale(level0_um, out_um) / 2.0
    return np.round(np.asarray(centers, dtype=np.float64) - half).astype(np.int64)


def iter_patches(
    wsi: WSI,
    centers: np.ndarray,
    out_um: float = PATCH_PIXEL_SIZE_UM,
    size: int = PATCH_SIZE,
    batch: int = 64,
) -> Iterator[np.ndarray]:
    """Yield patches in batches (b, size, size, 3) for ``centers`` (N, 2), in order."""
    centers = np.asarray(centers, dtype=np.float64)
    for start in range(0, len(centers), batch):
        chunk = centers[start : start + batch]
        yield (
            np.stack([extract_patch(wsi, c, out_um, size) for c in chunk])
            if len(chunk)
            else np.zeros((0, size, size, 3), np.uint8)
        )


def spots_outside(centers: np.ndarray, dims: tuple[int, int]) -> np.ndarray:
    """Boolean mask of spot centres that lie outside an image of (width, height)."""
    c = np.asarray(centers, dtype=np.float64)
    w, h = dims
    return (c[:, 0] < 0) | (c[:, 1] < 0) | (c[:, 0] >= w) | (c[:, 1] >= h) | ~np.isfinite(c).all(axis=1)
