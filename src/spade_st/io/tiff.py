"""Writing pyramidal tiled TIFFs that OpenSlide opens (levels as successive pages, as HEST-1k does)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TILE = 256


def pyramid(image: np.ndarray, min_size: int = TILE) -> list[np.ndarray]:
    """Successive 2x box-downsampled levels until the image fits in one tile."""
    levels = [image]
    while max(levels[-1].shape[:2]) > min_size:
        h, w = levels[-1].shape[:2]
        nxt = Image.fromarray(levels[-1]).resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BOX)
        levels.append(np.asarray(nxt))
    return levels


def write_pyramidal_tiff(path: Path | str, image: np.ndarray, pixel_size_um: float, tile: int = TILE) -> None:
    """Write RGB uint8 ``image`` as a tiled, deflate-compressed pyramidal TIFF at ``path``.

    The pixel size is stored as X/Y resolution in pixels per centimetre, which OpenSlide and tifffile read
    back (``openslide.mpp-x``), and in the description as ``MPP = …``.
    """
    import tifffile

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        msg = f"expected an RGB uint8 image (h, w, 3), got {image.dtype} {image.shape}"
        raise ValueError(msg)
    res = 1e4 / float(pixel_size_um)  # pixels per cm
    with tifffile.TiffWriter(path, bigtiff=image.nbytes > 2**31) as tw:
        for i, level in enumerate(pyramid(image, tile)):
            ds = image.shape[1] / level.shape[1]
            tw.write(
                level,
                photometric="rgb",
                tile=(tile, tile),
                compression="zlib",
                subfiletype=0 if i == 0 else 1,
                resolution=(res / ds, res / ds),
                resolutionunit="CENTIMETER",
                description=f"spade-st pyramidal TIFF|MPP = {pixel_size_um * ds:.6f}" if i == 0 else None,
                metadata=None,
            )
