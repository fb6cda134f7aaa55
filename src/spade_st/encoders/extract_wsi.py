"""``spade-st extract-wsi``: tissue tiles of whole slides (224 px at 0.5 µm/px) and their features."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from .._dist import barrier, default_device, init_distributed, shard
from .._keys import PATCH_PIXEL_SIZE_UM, PATCH_SIZE
from .._progress import progress as tqdm
from .._validation import SpadeInputError
from ..io.features import FeatureSet, is_finished, stale_attrs, write_features
from ..io.wsi import open_wsi
from .registry import create_encoder


@dataclass
class ExtractWsiConfig:
    """Options of ``spade-st extract-wsi``."""

    wsi: list[Path]
    encoder: str
    out: Path
    weights: Path | None = None
    pixel_size_um: float | None = None  #: level-0 µm/px of slides that record none
    force_pixel_size: bool = False  #: use ``pixel_size_um`` over a slide's own value (recorded in the file)
    tile_size: int = PATCH_SIZE  #: tile side in output pixels
    target_um: float = PATCH_PIXEL_SIZE_UM  #: µm per output pixel of a tile
    batch_size: int = 64
    device: str | None = None
    min_tissue: float = 0.25
    overwrite: bool = False
    progress: bool = True


@dataclass
class _Slide:
    path: Path
    pixel_size_um: float
    pixel_size_source: str
    coords: np.ndarray
    tissue: np.ndarray


def slide_tiles(
    path: Path,
    pixel_size_um: float | None,
    min_tissue: float,
    force_pixel_size: bool = False,
    tile_size: int = PATCH_SIZE,
    target_um: float = PATCH_PIXEL_SIZE_UM,
):
    """Open a slide; return it, its tissue tile grid (level-0 top-left corners) and each tile's tissue fraction."""
    from ..io.tissue import tile_grid, tissue_mask
    from ..io.wsi import open_wsi

    wsi = open_wsi(path, pixel_size_um=pixel_size_um, force_pixel_size=force_pixel_size)
    _ = wsi.pixel_size_um  # a clear error now if the slide has none and none was given
    mask, scale = tissue_mask(wsi)
    coords, frac = tile_grid(
        wsi, mask, scale, size=tile_size, out_um=target_um, min_tissue=min_tissue, return_fraction=True
    )
    return wsi, coords, frac


def _check_options(cfg: ExtractWsiConfig) -> None:
    if not 0 < cfg.min_tissue <= 1:
        msg = f"--min-tissue {cfg.min_tissue:g} is not a fraction: give a number in (0, 1], e.g. 0.25"
        raise SpadeInputError(msg)
    if not 16 <= int(cfg.tile_size) <= 4096:
        msg = f"--tile-size {cfg.tile_size} px is not plausible: give 16-4096 (the paper's is {PATCH_SIZE})"
        raise SpadeInputError(msg)
    if not (np.isfinite(cfg.target_um) and 0.05 <= cfg.target_um <= 20):
        msg = (
            f"--target-um {cfg.target_um:g} µm/px is not plausible: give 0.05-20 (the paper's is {PATCH_PIXEL_SIZE_UM})"
        )
        raise SpadeInputError(msg)
    slides = [Path(p) for p in cfg.wsi]
    stems = [p.stem for p in slides]
    dup = {s for s in stems if stems.count(s) > 1}
    if dup:
        msg = f"slides with the same file stem would overwrite each other's features: {sorted(dup)}; rename them"
        raise SpadeInputError(msg)


def _survey(cfg: ExtractWsiConfig, slides: list[Path]) -> list[_Slide]:
    """Every slide opened, its pixel size settled and its tissue found before the first tile of any slide."""
    out = []
    for path in slides:
        wsi, coords, frac = slide_tiles(
            path, cfg.pixel_size_um, cfg.min_tissue, cfg.force_pixel_size, cfg.tile_size, cfg.target_um
        )
        with wsi:
            if len(coords) == 0:
                msg = (
                    f"{path.name}: no tile of {cfg.tile_size} px at {cfg.target_um:g} µm/px has {cfg.min_tissue:.0%} "
                    "tissue (a blank or fully white slide?); check the slide, or lower --min-tissue"
                )
                raise SpadeInputError(msg)
            out.append(_Slide(path, wsi.pixel_size_um, wsi.pixel_size_source, coords, frac))
    return out


def expand_slides(paths) -> list[Path]:
    """Slide paths, with each folder replaced by the slides in it (sorted by name)."""
    from ..io.wsi import SLIDE_SUFFIXES

    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in SLIDE_SUFFIXES)
            if not found:
                msg = f"no slides ({', '.join(sorted(SLIDE_SUFFIXES))}) in folder {p}; pass slide files or their folder"
                raise SpadeInputError(msg)
            out += found
        else:
            out.append(p)
    return out


def extract_wsi(cfg: ExtractWsiConfig) -> list[Path]:
    """Features of every tissue tile of each slide -> ``cfg.out/<encoder>/<slide stem>.h5``.

    Every slide is checked first (pixel size, tissue); a complete file is reused only when its encoder, weights
    and geometry (level-0 and target pixel size, tile size, tile count) are this run's, else it is recomputed.
    """
    from ..io.patches import iter_patches, patch_scale
    from .extract import encode_batches

    cfg.wsi = expand_slides(cfg.wsi)
    _check_options(cfg)
    info = init_distributed(cfg.device)
    slides = _survey(cfg, list(cfg.wsi))
    encoder = create_encoder(cfg.encoder, weights=cfg.weights, device=default_device(info, cfg.device))
    out_dir = Path(cfg.out) / encoder.name
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for sl in shard(slides, info):
        dst = out_dir / f"{sl.path.stem}.h5"
        written.append(dst)
        s = patch_scale(sl.pixel_size_um, cfg.target_um)
        expect = {
            "encoder": encoder.name,
            "weights_sha256": encoder.weights_sha256,
            "level0_pixel_size_um": sl.pixel_size_um,
            "pixel_size_um": float(cfg.target_um),
            "patch_size": int(cfg.tile_size),
            "pixel_size_source": sl.pixel_size_source,
        }
        coords = sl.coords
        if not cfg.overwrite:
            if is_finished(dst, expect, n=len(coords), dim=encoder.embed_dim):
                continue
            stale = stale_attrs(dst, expect)
            if stale and cfg.progress and info.rank == 0:
                said = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in stale.items())
                print(f"extract-wsi: recomputing {dst.name}: {said}", file=sys.stderr)
        half = cfg.tile_size * s / 2
        with open_wsi(sl.path, pixel_size_um=sl.pixel_size_um, force_pixel_size=True) as wsi:
            with tqdm(total=len(coords), unit="tile", desc=f"{sl.path.name}", disable=not cfg.progress) as bar:
                tiles = iter_patches(
                    wsi,
                    np.asarray(coords, np.float64) + half,
                    out_um=cfg.target_um,
                    size=cfg.tile_size,
                    batch=cfg.batch_size,
                )
                feats = encode_batches(encoder, tiles, len(coords), bar)
        write_features(
            dst,
            FeatureSet(
                features=feats,
                coords=coords,
                attrs=expect
                | {
                    "slide": str(sl.path),
                    "embed_dim": encoder.embed_dim,
                    "n_patches": len(coords),
                    "patch_size_level0": float(cfg.tile_size * s),
                    "level0_magnification": 10.0 / sl.pixel_size_um,
                    "target_magnification": 10.0 / float(cfg.target_um),
                    "overlap": 0,
                    "min_tissue": float(cfg.min_tissue),
                    "transforms": json.dumps(encoder.transforms),
                    "spade_st_version": __version__,
                },
            ),
            extra={"tissue_fraction": sl.tissue},
        )
    barrier(info)
    return written
