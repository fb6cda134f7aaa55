"""``tl.extract``: frozen-encoder features of every spot patch, into ``adata.obsm["X_<encoder>"]``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .. import _keys as K
from .._progress import progress as tqdm
from .._validation import DataWarning, SpadeInputError


def _encoder(encoder, weights, device):
    if isinstance(encoder, str):
        from ..encoders import create_encoder

        return create_encoder(encoder, weights=weights, device=device)
    return encoder


def _run(enc, batches, n: int, progress: bool, desc: str) -> np.ndarray:
    from ..encoders.extract import encode_batches

    with tqdm(total=n, desc=desc, unit="patch", disable=not progress) as bar:
        return encode_batches(enc, batches, n, bar)


def _scanpy_image(adata, library_id: str | None):
    """The hires image of ``adata.uns['spatial']`` (scanpy/squidpy Visium), its µm/px and its coordinate scale."""
    spatial = adata.uns.get("spatial", {})
    if not spatial:
        return None
    lib = library_id or next(iter(spatial))
    if lib not in spatial:
        msg = f"library_id {lib!r} is not in adata.uns['spatial'] (has: {sorted(spatial)})"
        raise SpadeInputError(msg)
    d = spatial[lib]
    img, sf = d.get("images", {}).get("hires"), d.get("scalefactors", {})
    if img is None or "tissue_hires_scalef" not in sf or "spot_diameter_fullres" not in sf:
        return None
    scale = float(sf["tissue_hires_scalef"])
    px = K.VISIUM_SPOT_UM / (float(sf["spot_diameter_fullres"]) * scale)
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = np.clip(np.round(img * (255 if img.max() <= 1.0 else 1)), 0, 255).astype(np.uint8)
    return img[..., :3], px, scale


def _open_image(adata, img, pixel_size_um, library_id):
    """(WSI, spot centres in its level-0 pixels) for an AnnData."""
    from ..io.wsi import WSI, ArrayWSI, open_wsi

    centers = np.asarray(adata.obsm[K.SPATIAL], np.float64)[:, :2]
    if img is None:
        found = _scanpy_image(adata, library_id)
        if found is None:
            msg = (
                "no image: pass img= (a slide or image path, an open WSI, or an RGB array with pixel_size_um=) "
                "whose level-0 pixels obsm['spatial'] is in, or an AnnData with scanpy's uns['spatial'] hires image"
            )
            raise SpadeInputError(msg)
        arr, px, scale = found
        return ArrayWSI(Path("uns_spatial_hires"), [arr], px, "array"), centers * scale
    if isinstance(img, WSI):
        if pixel_size_um is not None:
            import copy

            from ..io.wsi import apply_pixel_size

            img = apply_pixel_size(copy.copy(img), pixel_size_um)  # the caller's slide keeps its own pixel size
        return img, centers
    if isinstance(img, np.ndarray):
        if pixel_size_um is None:
            msg = "an image given as an array needs pixel_size_um= (µm per pixel of the array)"
            raise SpadeInputError(msg)
        return ArrayWSI(Path("array"), [np.asarray(img, np.uint8)[..., :3]], float(pixel_size_um), "array"), centers
    return open_wsi(img, pixel_size_um=pixel_size_um), centers


def extract(
    data,
    encoder="efficientnet_lite0",
    *,
    weights=None,
    img=None,
    pixel_size_um: float | None = None,
    library_id: str | None = None,
    key_added: str | None = None,
    batch_size: int = 16,
    device: str | None = None,
    progress: bool = True,
    copy: bool = False,
):
    """Features of the 224 px, 0.5 µm/px patch centred on each spot.

    Parameters
    ----------
    data
        An AnnData with ``obsm['spatial']`` (spot centres in level-0 pixels of ``img``), or a
        :class:`~spade_st.io.HestSample` (its patches are read from the HEST root; nothing is written there).
    encoder
        A registered encoder name (``spade_st.list_encoders()``) or an encoder from ``create_encoder``.
    weights
        Weights file or Hugging Face snapshot folder (default: ``$SPADE_ST_WEIGHTS``).
    img
        The H&E: a slide/image path, an open :class:`~spade_st.io.WSI` or an RGB array (with ``pixel_size_um``).
        Default: scanpy's ``uns['spatial'][library_id]['images']['hires']`` (a warning says how much it is
        upsampled).
    key_added
        ``obsm`` key (default ``X_<encoder>``).

    Returns
    -------
    For a HestSample: a new AnnData (the sample's spots that have patches). For an AnnData: None (``obsm`` is
    filled in place), or the filled copy with ``copy=True``.
    """
    enc = _encoder(encoder, weights, device)
    key = key_added or K.features_key(enc.name)
    if hasattr(data, "patches") and hasattr(data, "layout"):  # a HEST sample
        pf = data.patches
        bcs = pf.barcodes
        n = len(bcs)
        a = data.adata[list(map(str, bcs))].copy()
        batches = (pf.read(i, i + batch_size) for i in range(0, n, batch_size))
        a.obsm[key] = _run(enc, batches, n, progress, f"extract {data.id}")
        # what tl.fit needs for the patient-disjoint, per-organ split
        a.uns[K.UNS] = dict(a.uns.get(K.UNS, {})) | {"sample_id": data.id, "patient": data.patient, "organ": data.organ}
        return a
    if K.SPATIAL not in getattr(data, "obsm", {}):
        msg = "extract needs an AnnData with obsm['spatial'] (spot centres in pixels) or a HestSample"
        raise SpadeInputError(msg)
    a = data.copy() if copy else data
    from ..io.patches import iter_patches, patch_scale

    wsi, centers = _open_image(a, img, pixel_size_um, library_id)
    up = 1 / patch_scale(wsi.pixel_size_um)
    if up > 2:
        warnings.warn(
            f"the image has {wsi.pixel_size_um:.2f} µm/px: patches at 0.5 µm/px are upsampled {up:.1f}x and carry "
            "less detail than the encoder expects; use the full-resolution H&E if you have it",
            DataWarning,
            stacklevel=2,
        )
    a.obsm[key] = _run(enc, iter_patches(wsi, centers, batch=batch_size), a.n_obs, progress, "extract")
    return a if copy else None
