"""A slide as a deep-zoom pyramid of JPEG tiles: ``tiles/<level>/<col>_<row>.jpg``, one folder per level.

Level ``n_levels - 1`` is the slide at full resolution (level-0 pixels), each level below it half the size of
the one above, and level 0 the first that fits in one tile. Tiles are ``tile`` pixels square except at the
right and bottom edges, with no overlap.

Resumable and atomic: each level is written into a temporary folder with its ``done.json`` (geometry, source
key, tile count) last, then renamed into place. A rerun skips a level whose ``done.json`` matches the slide and
whose folder holds every tile it lists; a level written for another slide or geometry is rewritten.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..._atomic import TMP_PREFIX, _fsync_dir, tmp_sibling

TILE = 256  #: tile side in pixels
QUALITY = 85  #: JPEG quality of the tiles
#: a level up to this many pixels is held in memory and halved for the next; larger ones are read in strips
IN_MEMORY_PIXELS = 16_000_000


@dataclass(frozen=True)
class Pyramid:
    """Geometry of a slide's tile pyramid (what the page needs to request tiles)."""

    width: int  #: level-0 width of the slide (px)
    height: int
    tile: int = TILE

    @property
    def n_levels(self) -> int:
        """Levels from one tile (level 0) to full resolution (``n_levels - 1``)."""
        return max(0, math.ceil(math.log2(max(self.width, self.height) / self.tile))) + 1

    def downsample(self, level: int) -> int:
        """Level-0 pixels per pixel of ``level``."""
        return 2 ** (self.n_levels - 1 - level)

    def size(self, level: int) -> tuple[int, int]:
        """(width, height) of ``level`` in its own pixels."""
        d = self.downsample(level)
        return max(1, math.ceil(self.width / d)), max(1, math.ceil(self.height / d))

    def grid(self, level: int) -> tuple[int, int]:
        """(columns, rows) of tiles of ``level``."""
        w, h = self.size(level)
        return math.ceil(w / self.tile), math.ceil(h / self.tile)

    def levels(self) -> list[dict]:
        """Each level's size and grid, as the page reads them."""
        out = []
        for lv in range(self.n_levels):
            (w, h), (c, r) = self.size(lv), self.grid(lv)
            out.append({"level": lv, "width": w, "height": h, "cols": c, "rows": r, "downsample": self.downsample(lv)})
        return out


def _level_key(pyr: Pyramid, level: int, source: dict) -> dict:
    cols, rows = pyr.grid(level)
    w, h = pyr.size(level)
    return {"source": source, "tile": pyr.tile, "quality": QUALITY, "level": level, "width": w, "height": h,
            "cols": cols, "rows": rows}  # fmt: skip


def level_done(folder: Path, key: dict) -> bool:
    """True when ``folder`` is a finished level made for ``key`` (its record matches, every tile is there)."""
    rec = folder / "done.json"
    if not rec.is_file():
        return False
    try:
        got = json.loads(rec.read_text())
    except (OSError, ValueError):
        return False
    if got.get("key") != key:
        return False
    names = {f"{c}_{r}.jpg" for c in range(key["cols"]) for r in range(key["rows"])}
    have = {e.name for e in os.scandir(folder) if e.is_file() and e.stat().st_size > 0}
    return names <= have


def source_key(wsi) -> dict:
    """What identifies the slide a pyramid was cut from: its file (name, size, mtime) and level-0 size."""
    st = Path(wsi.path).stat()
    return {"file": Path(wsi.path).name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
            "width": int(wsi.dimensions[0]), "height": int(wsi.dimensions[1])}  # fmt: skip


def _read_level(wsi, pyr: Pyramid, level: int, y0: int = 0, y1: int | None = None) -> np.ndarray:
    """Rows ``y0:y1`` of ``level`` (its own pixels), read from the slide's nearest finer level and resized."""
    w, h = pyr.size(level)
    y1 = h if y1 is None else min(y1, h)
    d = pyr.downsample(level)
    src = wsi.best_level_for_downsample(d)
    sd = wsi.level_downsamples[src]
    # the strip in level-0 px, then in the source level's px
    top, bottom = y0 * d, min(y1 * d, pyr.height)
    sw = max(1, round(pyr.width / sd))
    sh = max(1, round((bottom - top) / sd))
    region = wsi.read_region((0, top), src, (sw, sh))
    if region.shape[1] == w and region.shape[0] == y1 - y0:
        return region
    return np.asarray(Image.fromarray(region).resize((w, y1 - y0), Image.Resampling.BOX))


def _halve(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The next coarser level from this one: a 2 x 2 box average to ``size`` (width, height)."""
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BOX))


def _cut(img: np.ndarray, folder: Path, row0: int, tile: int) -> int:
    """Write ``img`` (whole tile rows starting at tile row ``row0``) as JPEG tiles; returns how many."""
    n = 0
    h, w = img.shape[:2]
    for r in range(math.ceil(h / tile)):
        for c in range(math.ceil(w / tile)):
            part = img[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile]
            Image.fromarray(np.ascontiguousarray(part)).save(folder / f"{c}_{row0 + r}.jpg", quality=QUALITY)
            n += 1
    return n


def _write_level(wsi, pyr: Pyramid, level: int, dst: Path, key: dict, img: np.ndarray | None) -> np.ndarray | None:
    """Write one level into ``dst`` atomically; returns its image when it was held in memory, else None."""
    tmp = tmp_sibling(dst, suffix=".part")
    tmp.mkdir(parents=True)
    try:
        w, h = pyr.size(level)
        if img is not None or w * h <= IN_MEMORY_PIXELS:
            img = _read_level(wsi, pyr, level) if img is None else img
            _cut(img, tmp, 0, pyr.tile)
        else:  # a level too large to hold: strips of tile rows read from the slide
            rows = max(1, IN_MEMORY_PIXELS // (w * pyr.tile) // 4)
            for r0 in range(0, pyr.grid(level)[1], rows):
                strip = _read_level(wsi, pyr, level, r0 * pyr.tile, (r0 + rows) * pyr.tile)
                _cut(strip, tmp, r0, pyr.tile)
        (tmp / "done.json").write_text(json.dumps({"key": key}, sort_keys=True))
        _fsync_dir(tmp)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
        _fsync_dir(dst.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return img


def write_pyramid(wsi, out: Path, tile: int = TILE, bar=None) -> tuple[Pyramid, list[int]]:
    """Write (or finish) the tile pyramid of ``wsi`` under ``out/tiles``.

    Parameters
    ----------
    wsi
        An open :class:`~spade_st.io.wsi.WSI`.
    out
        The viewer folder; tiles go to ``out/tiles/<level>/``.
    tile
        Tile side in pixels.
    bar
        A progress bar updated once per level (optional).

    Returns
    -------
    (Pyramid, list of int)
        The geometry, and the levels written by this call (those skipped were already finished).
    """
    pyr = Pyramid(int(wsi.dimensions[0]), int(wsi.dimensions[1]), tile)
    root = Path(out) / "tiles"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f"{TMP_PREFIX}*"):  # a killed run's half-written level
        shutil.rmtree(stale, ignore_errors=True)
    src = source_key(wsi)
    written, img = [], None
    for level in reversed(range(pyr.n_levels)):  # full resolution first, each next level halved from it
        key = _level_key(pyr, level, src)
        dst = root / str(level)
        if level_done(dst, key):
            img = None  # the next level is read from the slide if it is not finished either
        else:
            if img is not None:
                img = _halve(img, pyr.size(level))
            img = _write_level(wsi, pyr, level, dst, key, img)
            written.append(level)
        if bar is not None:
            bar.update(1)
    for extra in root.iterdir():  # levels of an earlier, larger pyramid of another slide
        if extra.is_dir() and extra.name.isdigit() and int(extra.name) >= pyr.n_levels:
            shutil.rmtree(extra)
    return pyr, written
