"""Feature files: one h5 per sample or slide (``features`` (N,D), ``barcode``, ``coords``, attributes).

The format is TRIDENT-compatible (``features``, ``coords``, attributes ``patch_size``,
``level0_magnification``), and :func:`read_features` also opens HEST-Benchmark / TRIDENT files that name the
arrays ``embeddings`` / ``barcodes``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .._atomic import atomic_path
from .._fault import maybe_die
from .._validation import SpadeInputError, require_file

COMPLETE = "spade_st_complete"


@dataclass
class FeatureSet:
    """Features of one sample or slide."""

    features: np.ndarray
    coords: np.ndarray | None = None
    barcode: np.ndarray | None = None
    attrs: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)  #: other datasets of the file (e.g. expert_weights)

    def __len__(self) -> int:
        return len(self.features)


def write_features(
    path: Path | str, fs: FeatureSet, key: str = "features", extra: dict | None = None, encoder_name: str | None = None
) -> None:
    """Write ``fs`` atomically (temp file + rename); the file is marked complete only once fully written.

    The layout is TRIDENT's as well as ours: the array under ``key`` (``features``) with an ``encoder``
    attribute (``encoder_name``, default ``fs.attrs['encoder']``), ``coords`` carrying TRIDENT's geometry
    attributes (:func:`trident_coords_attrs`), our attributes on the file root; ``extra`` adds arrays.
    """
    feats = np.asarray(fs.features)
    if feats.ndim != 2:
        msg = f"features must be (N, D), got shape {feats.shape}"
        raise ValueError(msg)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        main = f.create_dataset(
            key, data=feats, chunks=(min(len(feats), 4096) or 1, feats.shape[1]) if len(feats) else None
        )
        if encoder_name or fs.attrs.get("encoder"):
            main.attrs["encoder"] = str(encoder_name or fs.attrs["encoder"])  # where TRIDENT keeps it
        if fs.coords is not None:
            c = f.create_dataset("coords", data=np.asarray(fs.coords))
            c.attrs.update(trident_coords_attrs(fs.attrs, Path(path).stem))
        if fs.barcode is not None:
            f.create_dataset("barcode", data=np.asarray(fs.barcode, dtype=object), dtype=h5py.string_dtype())
        for k, v in (extra or {}).items():
            f.create_dataset(k, data=np.asarray(v))
        for k, v in fs.attrs.items():
            f.attrs[k] = v if v is not None else ""
        f.attrs[COMPLETE] = True
        f.flush()
        maybe_die(f"write-{Path(path).stem}")  # fault point for the kill-and-resume tests


def trident_coords_attrs(attrs: dict, name: str) -> dict:
    """TRIDENT's attributes of the ``coords`` dataset, from ours: ``patch_size`` (at the target magnification),
    ``patch_size_level0`` (an int, as TRIDENT computes it: floor division), ``level0_magnification``, ``target_magnification``,
    ``overlap``, ``name``; empty where the file has no tile geometry (spot patches without magnifications)."""
    need = ("patch_size", "level0_magnification", "target_magnification")
    if not all(attrs.get(k) not in (None, "") for k in need):
        return {}
    ps, l0, tm = int(attrs["patch_size"]), float(attrs["level0_magnification"]), float(attrs["target_magnification"])
    return {
        "patch_size": ps,
        "patch_size_level0": int(ps * l0 // tm),  # TRIDENT: patch_size * level0_mag // target_mag
        "level0_magnification": l0,
        "target_magnification": tm,
        "overlap": int(attrs.get("overlap") or 0),
        "name": name,
    }


def _decode(a) -> np.ndarray:
    a = np.asarray(a).reshape(-1)
    return np.array([x.decode() if isinstance(x, bytes) else str(x) for x in a], dtype=object)


def _attrs(f: h5py.File, key: str) -> dict:
    """The file's attributes, over those of the main and ``coords`` datasets (TRIDENT keeps
    ``patch_size_level0`` & co. on ``coords``)."""
    attrs = {}
    for obj in [f[ds] for ds in ("coords", key) if ds in f] + [f]:  # later ones win
        attrs |= {k: (v.item() if hasattr(v, "item") else v) for k, v in obj.attrs.items()}
    return attrs


@contextmanager
def _open(path: Path | str):
    """The feature file open for reading; a missing, truncated or non-HDF5 file is a clear error."""
    p = require_file(path, "feature file", "run `spade-st extract` (or extract-wsi) first")
    try:
        with h5py.File(p, "r") as f:
            yield f
    except OSError as err:
        msg = f"cannot read feature file {p} ({err}); it is truncated or not HDF5: delete it and rerun"
        raise SpadeInputError(msg) from err


def _main_key(f: h5py.File, path) -> str:
    """The name of the file's feature array; a file without one (patches, expression) is refused."""
    key = next((k for k in ("features", "embeddings") if k in f and isinstance(f[k], h5py.Dataset)), None)
    if key is None or f[key].ndim not in (2, 3):
        msg = f"{path} has no 'features' or 'embeddings' array of shape (N, D) (found: {list(f.keys())}); is it a feature file?"
        raise SpadeInputError(msg)
    return key


def read_feature_attrs(path: Path | str) -> dict:
    """The attributes :func:`read_features` would return, without reading any array."""
    with _open(path) as f:
        return _attrs(f, _main_key(f, path))


def feature_shape(path: Path | str) -> tuple[int, int]:
    """(rows, width) of a file's feature array, without reading it."""
    with _open(path) as f:
        shape = f[_main_key(f, path)].shape
    return (shape[1], shape[2]) if len(shape) == 3 else (shape[0], shape[1])


def read_features(path: Path | str, require_complete: bool = False) -> FeatureSet:
    """Read a feature file (ours, TRIDENT's or HEST's); a truncated or foreign file is a clear error."""
    p = Path(path)
    with _open(p) as f:
        key = _main_key(f, p)
        feats = f[key][()]
        coords = np.asarray(f["coords"][()]) if "coords" in f else None
        bkey = next((k for k in ("barcode", "barcodes") if k in f), None)
        barcode = _decode(f[bkey][()]) if bkey else None
        attrs = _attrs(f, key)
        skip = {key, "coords", bkey}
        arrays = {k: f[k][()] for k in f if k not in skip and isinstance(f[k], h5py.Dataset)}
    if feats.ndim == 3 and feats.shape[0] == 1:  # TRIDENT/CLAM (1, N, D)
        feats = feats[0]
    if coords is not None and coords.ndim == 3 and coords.shape[0] == 1:
        coords = coords[0]
    if feats.ndim != 2:
        msg = f"{p}: features have shape {feats.shape}, expected (N, D)"
        raise SpadeInputError(msg)
    if require_complete and not attrs.get(COMPLETE, False):
        msg = f"{p} is not marked complete (written by an interrupted run?): delete it and rerun"
        raise SpadeInputError(msg)
    return FeatureSet(features=feats, coords=coords, barcode=barcode, attrs=attrs, arrays=arrays)


def _mismatch(f: h5py.File, expect: dict) -> dict:
    out = {}
    for k, v in expect.items():
        got = f.attrs.get(k)
        got = got.item() if hasattr(got, "item") else got
        if got != v:
            out[k] = (got, v)
    return out


def stale_attrs(path: Path, expect: dict) -> dict:
    """``{attribute: (in the file, expected)}`` where a complete feature file disagrees with ``expect`` (the
    reason :func:`is_finished` recomputes it); empty for a missing, unfinished or matching file."""
    if not Path(path).is_file():
        return {}
    try:
        with h5py.File(path, "r") as f:
            return _mismatch(f, expect) if f.attrs.get(COMPLETE, False) else {}
    except OSError:
        return {}


def is_finished(path: Path, expect: dict, n: int | None = None, dim: int | None = None, key: str = "features") -> bool:
    """True if ``path`` is a complete feature file whose attributes match ``expect`` (and shape, if given)."""
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            if not f.attrs.get(COMPLETE, False) or key not in f or _mismatch(f, expect):
                return False
            shape = f[key].shape
            if n is not None and shape[0] != n:
                return False
            if dim is not None and shape[1] != dim:
                return False
            return bool(np.isfinite(f[key][: min(shape[0], 4096)]).all())
    except OSError:
        return False


#: attributes that say where a file's tiles sit (copied from features to their SPADE embeddings)
GEOMETRY_ATTRS = (
    "slide",
    "patch_size",
    "patch_size_level0",
    "pixel_size_um",
    "level0_pixel_size_um",
    "level0_magnification",
    "target_magnification",
    "pixel_size_source",
)


#: TRIDENT's encoder names (its ``features_<name>/`` folders) that are spade-st encoders under another name
TRIDENT_NAMES = {
    "uni_v1": "uni",
    "uni_v2": "uni2-h",
    "hoptimus0": "h-optimus-0",
    "hoptimus1": "h-optimus-1",
    "resnet50": "resnet50_trunc",
}


def is_spade_embedding(attrs: dict) -> bool:
    """True for a file written by ``spade-st embed`` (its array is ``X_spade``, not encoder features)."""
    return "model_sha256" in attrs and "n_experts" in attrs


def feature_encoder(path: Path | str, attrs: dict, encoder: str | None = None) -> str | None:
    """The encoder of a feature file: the one it names, else ``encoder`` (the user's flag), else TRIDENT's folder
    name ``features_<encoder>``; None when nothing says. A flag that contradicts the file is an error."""
    own = str(attrs.get("encoder") or "") or None
    own = TRIDENT_NAMES.get(own, own) if own else None  # TRIDENT writes its own names (uni_v1) on the array
    encoder = TRIDENT_NAMES.get(encoder, encoder) if encoder else None
    if own and encoder and own != encoder:
        msg = f"{path} holds {own} features, not {encoder}; drop --encoder or pass the {encoder} files"
        raise SpadeInputError(msg)
    if own or encoder:
        return own or encoder
    parent = Path(path).parent.name
    if not parent.startswith("features_") or parent == "features_":
        return None
    name = parent.removeprefix("features_")
    return TRIDENT_NAMES.get(name, name)


def feature_files(
    path: Path | str, what: str = "feature files", fix: str = "run `spade-st extract` first"
) -> list[Path]:
    """A feature file, or the ``*.h5`` files of a folder (sorted); neither is a clear error."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.h5"))
        if not files:
            msg = f"no {what} (*.h5) in folder {p}; {fix}"
            raise SpadeInputError(msg)
        return files
    return [require_file(p, what.removesuffix("s"), fix)]
