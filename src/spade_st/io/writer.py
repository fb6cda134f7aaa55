"""Writing one sample into a HEST-layout root, atomically.

All files are first written to a staging folder inside the root, then moved into place. The sample's row in
``metadata.csv`` is removed before the move (when overwriting) and added after it, and ``read_hest`` only
opens samples that have a row, so a killed conversion never leaves a sample that a reader would accept.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

from .. import __version__
from .. import _keys as K
from .._atomic import TMP_PREFIX, atomic_write_json
from .._fault import maybe_die
from .._progress import progress as tqdm
from .._validation import (
    DataWarning,
    SpadeInputError,
    check_pixel_size,
    check_raw_counts,
    check_sample_id,
    check_unique,
)
from .layout import Layout, read_metadata, remove_metadata_row, upsert_metadata_row
from .patches import iter_patches, patch_coords, spots_outside
from .tiff import write_pyramidal_tiff
from .wsi import ArrayWSI


@dataclass
class SampleMeta:
    """Metadata of one sample (HEST column names)."""

    organ: str = "unknown"
    patient: str | None = None
    species: str = "Homo sapiens"
    st_technology: str = "unknown"
    spot_diameter: float | None = None  #: µm
    inter_spot_dist: float | None = None  #: µm
    disease_state: str | None = None
    dataset_title: str | None = None
    extra: dict = field(default_factory=dict)


def _prepare_adata(adata, sid: str):
    """Validate and normalise an AnnData for writing: raw int counts, unique names, spatial present."""
    src = f"sample {sid}"
    if adata.n_obs == 0:
        msg = f"{src}: no spots left to write (check the spot selection / tissue positions)"
        raise SpadeInputError(msg)
    if K.SPATIAL not in adata.obsm:
        msg = f"{src}: AnnData has no obsm['spatial'] with spot centres in pixels; add it before converting"
        raise SpadeInputError(msg)
    check_unique(adata.obs_names, "barcodes", src)
    check_unique(adata.var_names, "gene names", src)
    check_raw_counts(adata.X, src)
    a = adata.copy()
    X = a.X
    X = sp.csr_matrix(X) if not sp.issparse(X) else X.tocsr()
    a.X = X.astype(np.int32) if X.max() < 2**31 else X.astype(np.int64)
    a.obsm[K.SPATIAL] = np.asarray(a.obsm[K.SPATIAL], dtype=np.float64)[:, :2]
    a.obs_names = a.obs_names.astype(str)
    a.var_names = a.var_names.astype(str)
    return a


#: the most a patch may be upsampled from its image (her2st's 2000 px copies are 6.4x; 25 µm/px would be 50x)
MAX_UPSAMPLING = 10.0


def write_sample(
    root: Path | str,
    sample_id: str,
    adata,
    image: np.ndarray,
    pixel_size_um: float,
    meta: SampleMeta | None = None,
    *,
    overwrite: bool = False,
    source: dict | None = None,
    progress: bool = True,
    coords_fix: str = "check --coord-scale / the scale factor, or the image file",
) -> Path:
    """Write ``adata`` + its full-resolution H&E ``image`` as sample ``sample_id`` of the HEST root ``root``.

    Parameters
    ----------
    adata
        Raw integer counts in X, gene symbols as var_names, barcodes as obs_names, ``obsm['spatial']`` = spot
        centres in pixels of ``image``.
    image
        RGB uint8 (h, w, 3) full-resolution image.
    pixel_size_um
        µm per pixel of ``image``.
    overwrite
        Replace an existing sample of that id (otherwise refused).
    source
        Provenance recorded in ``metadata/<id>.json`` (input files, options).
    """
    sid = check_sample_id(sample_id)
    px = check_pixel_size(pixel_size_um, f"sample {sid}")
    if px / K.PATCH_PIXEL_SIZE_UM > MAX_UPSAMPLING:
        msg = (
            f"sample {sid}: the image has {px:g} µm/px, so a {K.PATCH_PIXEL_SIZE_UM} µm/px patch would be upsampled "
            f"{px / K.PATCH_PIXEL_SIZE_UM:.0f}x (over {MAX_UPSAMPLING:g}x: a few image pixels per patch); use the "
            "full-resolution H&E, or check --pixel-size-um"
        )
        raise SpadeInputError(msg)
    if px / K.PATCH_PIXEL_SIZE_UM > 2:
        warnings.warn(
            f"sample {sid}: the image has {px:g} µm/px, so its {K.PATCH_PIXEL_SIZE_UM} µm/px patches are upsampled "
            f"{px / K.PATCH_PIXEL_SIZE_UM:.1f}x and carry less detail than the encoder expects; use the "
            "full-resolution H&E if there is one",
            DataWarning,
            stacklevel=2,
        )
    meta = meta or SampleMeta()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lay = Layout(root)
    if lay.metadata_csv.is_file() and sid in read_metadata(root).index and not overwrite:
        msg = f"sample {sid} already exists in {root}; pass --overwrite (overwrite=True) to replace it"
        raise SpadeInputError(msg)
    a = _prepare_adata(adata, sid)
    h, w = image.shape[:2]
    side = K.PATCH_SIZE * K.PATCH_PIXEL_SIZE_UM / px  # a patch's side in image pixels
    if side > min(w, h):
        msg = (
            f"sample {sid}: at {px:g} µm/px a {K.PATCH_SIZE} px patch at {K.PATCH_PIXEL_SIZE_UM} µm/px spans "
            f"{side:.0f} image pixels, more than the {w}x{h} image itself (the whole image would be "
            f"{min(w, h) * px:.0f} µm across); check --pixel-size-um"
        )
        raise SpadeInputError(msg)
    out = spots_outside(a.obsm[K.SPATIAL], (w, h))
    if out.any():
        ex = a.obs_names[np.flatnonzero(out)[0]]
        msg = (
            f"sample {sid}: {int(out.sum())} of {a.n_obs} spot centres lie outside the {w}x{h} image "
            f"(e.g. {ex} at {a.obsm[K.SPATIAL][out][0].round(1).tolist()}); the coordinates are probably in "
            f"another image's pixels: {coords_fix}"
        )
        raise SpadeInputError(msg)

    for stale in root.glob(f"{TMP_PREFIX}{sid}-*"):  # left by a killed run of this sample
        shutil.rmtree(stale, ignore_errors=True)
    stage = root / f"{TMP_PREFIX}{sid}-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    try:
        a.write_h5ad(stage / "st.h5ad")
        write_pyramidal_tiff(stage / "wsi.tif", image, px)
        _write_patches(stage / "patches.h5", ArrayWSI(Path(sid), [image], px, "memory"), a, px, progress)
        maybe_die(f"convert-{sid}-staged")  # fault points of the kill-and-rerun tests
        position = remove_metadata_row(root, sid)  # unlisted while its files are being replaced
        for name, dst in (("st.h5ad", lay.st(sid)), ("wsi.tif", lay.wsi(sid)), ("patches.h5", lay.patches(sid))):
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / name, dst)
            maybe_die(f"convert-{sid}-replaced-{name}")
    finally:
        shutil.rmtree(stage, ignore_errors=True)

    row = {
        "id": sid,
        "image_filename": f"{sid}.tif",
        "organ": meta.organ,
        "patient": meta.patient if meta.patient is not None else sid,
        "species": meta.species,
        "st_technology": meta.st_technology,
        "inter_spot_dist": meta.inter_spot_dist,
        "spot_diameter": meta.spot_diameter,
        "spots_under_tissue": int(a.n_obs),
        "nb_genes": int(a.n_vars),
        "pixel_size_um_embedded": px,
        "pixel_size_um_estimated": px,
        "magnification": _magnification(px),
        "fullres_px_width": int(w),
        "fullres_px_height": int(h),
        "disease_state": meta.disease_state,
        "dataset_title": meta.dataset_title,
        "tissue": meta.organ,
    } | dict(meta.extra)
    atomic_write_json(lay.meta_json(sid), row | {"spade_st": {"version": __version__, "source": source or {}}})
    upsert_metadata_row(root, row, position)
    return root


def _magnification(px: float) -> str:
    for mag, um in (("80x", 0.125), ("40x", 0.25), ("20x", 0.5), ("10x", 1.0), ("5x", 2.0)):
        if px <= um * 1.4:
            return mag
    return "<5x"


def _write_patches(path: Path, wsi: ArrayWSI, a, px: float, progress: bool) -> None:
    centers = a.obsm[K.SPATIAL]
    n = len(centers)
    with h5py.File(path, "w") as f:
        img = f.create_dataset(
            K.PATCH_IMG,
            shape=(n, K.PATCH_SIZE, K.PATCH_SIZE, 3),
            dtype=np.uint8,
            chunks=(1, K.PATCH_SIZE, K.PATCH_SIZE, 3),
            compression="gzip",
            compression_opts=1,
        )
        f.create_dataset(K.PATCH_COORDS, data=patch_coords(centers, px))
        f.create_dataset(K.PATCH_BARCODE, data=np.asarray(a.obs_names, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("centers", data=centers)
        attrs = {
            "patch_size": K.PATCH_SIZE,
            "patch_size_target": K.PATCH_SIZE,
            "pixel_size_um": K.PATCH_PIXEL_SIZE_UM,
            "level0_pixel_size_um": px,
            "patch_size_level0": K.PATCH_SIZE * K.PATCH_PIXEL_SIZE_UM / px,
            "level0_magnification": 10.0 / px,
            "coords_are": "level-0 top-left of each patch (rounded); spot centre = coords + patch_size_level0/2",
        }
        for k, v in attrs.items():
            img.attrs[k] = v
            f.attrs[k] = v
        done = 0
        bar = tqdm(total=n, desc=f"patches {wsi.path}", unit="patch", disable=not progress, leave=False)
        for batch in iter_patches(wsi, centers, batch=64):
            img[done : done + len(batch)] = batch
            done += len(batch)
            bar.update(len(batch))
        bar.close()
