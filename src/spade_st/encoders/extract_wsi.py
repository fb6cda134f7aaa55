"""``spade-st extract-wsi``: tissue tiles of whole slides (224 px at 0.5 µm/px) and their features."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from .._dist import barrier, default_device, init_distributed, shard
from .._keys import PATCH_PIXEL_SIZE_UM, PATCH_SIZE
from .._progress import progress as tqdm
from ..io.features import FeatureSet, is_finished, write_features
from .registry import create_encoder


@dataclass
class ExtractWsiConfig:
    """Options of ``spade-st extract-wsi``."""

    wsi: list[Path]
    encoder: str
    out: Path
    weights: Path | None = None
    pixel_size_um: float | None = None
    batch_size: int = 64
    device: str | None = None
    min_tissue: float = 0.25
    overwrite: bool = False
    progress: bool = True


def slide_tiles(path: Path, pixel_size_um: float | None, min_tissue: float):
    """Open a slide and return it with its tissue tile grid (level-0 top-left corners)."""
    from ..io.tissue import tile_grid, tissue_mask
    from ..io.wsi import open_wsi

    wsi = open_wsi(path, pixel_size_um=pixel_size_um)
    _ = wsi.pixel_size_um  # a clear error now if the slide has none and none was given
    mask, scale = tissue_mask(wsi)
    return wsi, tile_grid(wsi, mask, scale, min_tissue=min_tissue)


def extract_wsi(cfg: ExtractWsiConfig) -> list[Path]:
    """Features of every tissue tile of each slide -> ``cfg.out/<encoder>/<slide stem>.h5``."""
    from ..io.patches import iter_patches, patch_scale
    from .extract import encode_batches

    info = init_distributed(cfg.device)
    slides = [Path(p) for p in cfg.wsi]
    stems = [p.stem for p in slides]
    dup = {s for s in stems if stems.count(s) > 1}
    if dup:
        msg = f"slides with the same file stem would overwrite each other's features: {sorted(dup)}; rename them"
        raise ValueError(msg)
    encoder = create_encoder(cfg.encoder, weights=cfg.weights, device=default_device(info, cfg.device))
    out_dir = Path(cfg.out) / cfg.encoder
    out_dir.mkdir(parents=True, exist_ok=True)
    expect = {"encoder": cfg.encoder, "weights_sha256": encoder.weights_sha256}
    written = []
    for path in shard(slides, info):
        dst = out_dir / f"{path.stem}.h5"
        written.append(dst)
        wsi, coords = slide_tiles(path, cfg.pixel_size_um, cfg.min_tissue)
        if not cfg.overwrite and is_finished(dst, expect, n=len(coords), dim=encoder.embed_dim):
            continue
        s = patch_scale(wsi.pixel_size_um)
        half = PATCH_SIZE * s / 2
        with tqdm(total=len(coords), unit="tile", desc=f"{path.name}", disable=not cfg.progress) as bar:
            tiles = iter_patches(wsi, np.asarray(coords, np.float64) + half, batch=cfg.batch_size)
            feats = encode_batches(encoder, tiles, len(coords), bar)
        write_features(
            dst,
            FeatureSet(
                features=feats,
                coords=coords,
                attrs=expect
                | {
                    "slide": str(path),
                    "embed_dim": encoder.embed_dim,
                    "n_patches": len(coords),
                    "patch_size": PATCH_SIZE,
                    "patch_size_level0": float(PATCH_SIZE * s),
                    "pixel_size_um": PATCH_PIXEL_SIZE_UM,
                    "level0_pixel_size_um": wsi.pixel_size_um,
                    "level0_magnification": 10.0 / wsi.pixel_size_um,
                    "target_magnification": 20.0,
                    "overlap": 0,
                    "transforms": json.dumps(encoder.transforms),
                    "spade_st_version": __version__,
                },
            ),
        )
    barrier(info)
    return written
