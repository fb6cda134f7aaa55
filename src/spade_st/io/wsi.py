"""Whole-slide image access: OpenSlide first, tifffile as fallback, PIL for plain JPEG/PNG images.

Every reader exposes the same small interface (:class:`WSI`): level geometry, the level-0 pixel size in
µm/px (read from the slide or given, never a silent default) and ``read_region`` returning RGB uint8.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from .._validation import SpadeInputError, check_pixel_size, require_file


@contextmanager
def _no_pixel_limit():
    """Lift PIL's decompression-bomb limit while reading one image (H&E images are large on purpose); the
    caller's setting is restored afterwards."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


_PLAIN_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
#: file endings taken as slides when a folder is given (``extract-wsi --wsi FOLDER``)
SLIDE_SUFFIXES = {
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".vms",
    ".vmu",
    ".bif",
    ".svslide",
} | _PLAIN_SUFFIXES


class WSI:
    """A slide: level geometry, pixel size and region reads (RGB uint8, level-0 coordinates)."""

    path: Path
    level_dimensions: tuple[tuple[int, int], ...]
    backend: str = ""
    _pixel_size: float | None = None
    #: where the pixel size came from: ``"slide"``, ``"given"`` (the slide had none) or ``"forced"`` (given over
    #: the slide's own value, ``--force-pixel-size``)
    pixel_size_source: str = "slide"

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        w0 = self.level_dimensions[0][0]
        return tuple(w0 / w for w, _ in self.level_dimensions)

    @property
    def pixel_size_um(self) -> float:
        """µm per level-0 pixel; raises a clear error when the slide has none and none was given."""
        return check_pixel_size(self._pixel_size, f"slide {self.path}")

    @property
    def has_pixel_size(self) -> bool:
        return self._pixel_size is not None

    def best_level_for_downsample(self, downsample: float) -> int:
        """Deepest level whose downsample does not exceed ``downsample``."""
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample * (1 + 1e-6):
                best = i
        return best

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 (h, w, 3) at ``level``, top-left ``location`` in level-0 pixels; outside = white."""
        raise NotImplementedError

    def get_thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """RGB uint8 thumbnail whose longer side is at most ``max_size``."""
        w0, h0 = self.dimensions
        scale = max(w0, h0) / max_size
        level = self.best_level_for_downsample(max(scale, 1.0))
        lw, lh = self.level_dimensions[level]
        img = self.read_region((0, 0), level, (lw, lh))
        tw, th = max(1, round(w0 / max(scale, 1.0))), max(1, round(h0 / max(scale, 1.0)))
        return np.asarray(Image.fromarray(img).resize((tw, th), Image.Resampling.BOX))

    def close(self) -> None:  # pragma: no cover - trivial
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        px = f"{self._pixel_size:.4g} µm/px" if self._pixel_size else "unknown pixel size"
        return f"<WSI {self.path.name} {self.dimensions[0]}x{self.dimensions[1]}, {self.level_count} levels, {px}, {self.backend}>"


def _paste_inside(shape: tuple[int, int], x: int, y: int, w: int, h: int, reader) -> np.ndarray:
    """Region (h, w, 3) with white outside an image of ``shape``; ``reader(x0, y0, x1, y1)`` gives the inside."""
    out = np.full((h, w, 3), 255, dtype=np.uint8)
    H, W = shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 > x0 and y1 > y0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = reader(x0, y0, x1, y1)
    return out


class OpenSlideWSI(WSI):
    """Reader backed by OpenSlide (SVS, pyramidal TIFF, NDPI, MRXS, ...)."""

    backend = "openslide"

    def __init__(self, path: Path):
        import openslide

        self.path = Path(path)
        try:
            self._slide = openslide.OpenSlide(str(path))
        except (openslide.OpenSlideError, openslide.OpenSlideUnsupportedFormatError) as err:
            msg = f"OpenSlide cannot open {path}: {err}. Is it a complete, uncorrupted slide file?"
            raise SpadeInputError(msg) from err
        self.level_dimensions = tuple(tuple(map(int, d)) for d in self._slide.level_dimensions)
        self._pixel_size = self._mpp()

    def _mpp(self) -> float | None:
        props = self._slide.properties
        for key in ("openslide.mpp-x", "aperio.MPP"):
            if key in props:
                try:
                    v = float(props[key])
                except ValueError:
                    continue
                if v > 0 and math.isfinite(v):
                    return v
        return _mpp_from_tiff_tags(self.path)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self._slide.level_downsamples)

    def read_region(self, location, level, size):
        w, h = int(size[0]), int(size[1])
        region = self._slide.read_region((int(location[0]), int(location[1])), int(level), (w, h))
        rgba = np.asarray(region)
        rgb = rgba[..., :3].astype(np.float32)
        alpha = rgba[..., 3:4].astype(np.float32) / 255.0
        # transparent (outside the slide) -> white, as the other backends do
        return np.clip(rgb * alpha + 255.0 * (1 - alpha) + 0.5, 0, 255).astype(np.uint8)

    def close(self):
        self._slide.close()


class ArrayWSI(WSI):
    """An in-memory single-level image (plain JPEG/PNG, or tifffile fallback reads)."""

    def __init__(self, path: Path, levels: list[np.ndarray], pixel_size_um: float | None, backend: str):
        self.path = Path(path)
        self._levels = levels
        self.level_dimensions = tuple((a.shape[1], a.shape[0]) for a in levels)
        self._pixel_size = pixel_size_um
        self.backend = backend

    def read_region(self, location, level, size):
        arr = self._levels[level]
        ds = self.level_downsamples[level]
        x, y = round(location[0] / ds), round(location[1] / ds)
        return _paste_inside(arr.shape[:2], x, y, int(size[0]), int(size[1]), lambda x0, y0, x1, y1: arr[y0:y1, x0:x1])

    @property
    def array(self) -> np.ndarray:
        """Level 0 as an array (h, w, 3)."""
        return self._levels[0]


def _to_rgb(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        msg = f"{path}: image has shape {arr.shape}, expected (height, width, 3) RGB"
        raise SpadeInputError(msg)
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.integer) and arr.max(initial=0) > 255:
            arr = (arr / (np.iinfo(arr.dtype).max / 255.0)).round()
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def read_image(path: Path | str) -> np.ndarray:
    """Read a plain image (JPEG/PNG/TIFF) as RGB uint8; a corrupt file is a clear error."""
    p = require_file(path, "image")
    try:
        with _no_pixel_limit(), Image.open(p) as im:
            im.load()
            return _to_rgb(np.asarray(im.convert("RGB")), p)
    except (OSError, SyntaxError, ValueError) as err:
        msg = f"cannot read image {p}: {err}. Is the file complete and a JPEG/PNG/TIFF?"
        raise SpadeInputError(msg) from err


def _mpp_from_tiff_tags(path: Path) -> float | None:
    """Pixel size from TIFF tags: Aperio ``MPP = x`` in the description, or X resolution in cm/inch."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            desc = page.description or ""
            m = re.search(r"MPP\s*=\s*([0-9.eE+-]+)", desc)
            if m:
                return float(m.group(1))
            tags = page.tags
            if "XResolution" in tags and "ResolutionUnit" in tags:
                num, den = tags["XResolution"].value
                unit = int(tags["ResolutionUnit"].value)
                if num and den and unit in (2, 3):
                    px_per_unit = num / den
                    um_per_unit = 25400.0 if unit == 2 else 10000.0
                    v = um_per_unit / px_per_unit
                    # a 72 dpi default is no pixel size (353 µm/px)
                    return v if v < 100 else None
    except (tifffile.TiffFileError, OSError, KeyError, ValueError, ZeroDivisionError):
        return None
    return None


def _open_tifffile(path: Path) -> ArrayWSI:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            pages = [p for p in tif.pages if p.shape and len(p.shape) >= 2]
            base = pages[0]
            levels = [_to_rgb(base.asarray(), path)]
            for p in pages[1:]:
                if p.shape[0] < levels[-1].shape[0] and p.shape[1] < levels[-1].shape[1] and p.is_tiled:
                    levels.append(_to_rgb(p.asarray(), path))
    except (tifffile.TiffFileError, OSError, ValueError, IndexError) as err:
        msg = f"cannot read TIFF {path}: {err}. Is the file complete?"
        raise SpadeInputError(msg) from err
    return ArrayWSI(path, levels, _mpp_from_tiff_tags(path), "tifffile")


#: a given pixel size within this relative distance of the slide's own counts as agreeing with it
PIXEL_SIZE_TOLERANCE = 0.05


def apply_pixel_size(wsi: WSI, given: float | None, force: bool = False) -> WSI:
    """The slide's own pixel size wins: ``given`` fills in for a slide that has none, agrees with it (within
    :data:`PIXEL_SIZE_TOLERANCE`, the slide's value is kept) or is refused, unless ``force``."""
    if given is None:
        return wsi
    given = check_pixel_size(given, f"slide {wsi.path}")
    own = wsi._pixel_size
    if own is None:
        wsi._pixel_size, wsi.pixel_size_source = given, "given"
    elif abs(given / own - 1) > PIXEL_SIZE_TOLERANCE:
        if not force:
            msg = (
                f"--pixel-size-um {given:g} disagrees with the {own:.4g} µm/px that {wsi.path.name} records "
                f"({abs(given / own - 1):.0%} off); drop the flag to use the slide's value, or add "
                "--force-pixel-size if the slide's metadata is wrong (the override is recorded)"
            )
            raise SpadeInputError(msg)
        wsi._pixel_size, wsi.pixel_size_source = given, "forced"
    return wsi


def open_wsi(
    path: Path | str, pixel_size_um: float | None = None, backend: str = "auto", force_pixel_size: bool = False
) -> WSI:
    """Open a slide or image.

    Parameters
    ----------
    path
        Slide (``.svs``, ``.tif``, ``.ndpi``, …) or plain image (``.jpg``/``.png``).
    pixel_size_um
        µm per level-0 pixel, for a slide that carries none. A slide's own value wins: a value more than 5 % away
        from it is an error unless ``force_pixel_size`` (see :func:`apply_pixel_size`).
    backend
        ``"auto"`` (OpenSlide, then tifffile), ``"openslide"``, ``"tifffile"`` or ``"pil"``.
    force_pixel_size
        Use ``pixel_size_um`` even where the slide records another (``wsi.pixel_size_source == "forced"``).
    """
    p = require_file(path, "slide/image", "check the path (--wsi / --image)")
    if pixel_size_um is not None:
        pixel_size_um = check_pixel_size(pixel_size_um, f"slide {p}")
    return apply_pixel_size(_open(p, backend), pixel_size_um, force_pixel_size)


def _open(p: Path, backend: str) -> WSI:
    suffix = p.suffix.lower()
    if backend == "pil" or (backend == "auto" and suffix in _PLAIN_SUFFIXES):
        return ArrayWSI(p, [read_image(p)], None, "pil")
    if backend in ("auto", "openslide"):
        try:
            return OpenSlideWSI(p)
        except ImportError as err:
            if backend == "openslide":
                msg = "OpenSlide is not installed: pip install openslide-python openslide-bin"
                raise ImportError(msg) from err
        except SpadeInputError:
            if backend == "openslide":
                raise
    if backend in ("auto", "tifffile"):
        return _open_tifffile(p)
    msg = f"unknown WSI backend {backend!r}: use 'auto', 'openslide', 'tifffile' or 'pil'"
    raise ValueError(msg)


def load_full_image(path: Path | str) -> tuple[np.ndarray, float | None]:
    """Level 0 of an image or slide as RGB uint8, with the pixel size it carries (None if it has none)."""
    w = open_wsi(path)
    image = w.array if isinstance(w, ArrayWSI) else w.read_region((0, 0), 0, w.dimensions)
    return image, (w._pixel_size if w.has_pixel_size else None)
