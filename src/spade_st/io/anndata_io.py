"""Converter for an AnnData file plus its H&E image into the HEST layout, and gene-name helpers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _keys as K
from .._atomic import plain
from .._validation import SpadeInputError, require_file
from .writer import SampleMeta, write_sample
from .wsi import load_full_image


@dataclass
class AnnDataConfig:
    """Options of ``spade-st convert anndata``."""

    adata: Path
    image: Path
    sample_id: str
    out: Path
    pixel_size_um: float | None = None
    layer: str | None = None
    spatial_key: str = K.SPATIAL
    organ: str = "unknown"
    species: str | None = None  #: default: the AnnData's ``uns``/``obs`` ``species`` or ``organism``, else required
    patient: str | None = None
    st_technology: str = "unknown"
    duplicate_genes: str = "error"
    overwrite: bool = False


def _species(cfg: AnnDataConfig, adata, path) -> str:
    """``--species``, else what the AnnData says (``uns`` or a constant ``obs`` column), else a one-line error."""
    if cfg.species:
        return str(cfg.species)
    for key in ("species", "organism"):
        v = adata.uns.get(key)
        if isinstance(v, str) and v.strip():
            return v.strip()
        if key in adata.obs and adata.obs[key].nunique() == 1:
            return str(adata.obs[key].iloc[0])
    msg = (
        f"{path} does not say its species (no uns/obs 'species' or 'organism'); pass --species, e.g. "
        "--species 'Homo sapiens' or --species 'Mus musculus'"
    )
    raise SpadeInputError(msg)


def merge_duplicate_genes(adata, mode: str, source: str):
    """Handle repeated gene names: ``"error"`` (refuse, naming them) or ``"sum"`` (add their counts)."""
    names = np.asarray(adata.var_names).astype(str)
    uniq, first, inverse, counts = np.unique(names, return_index=True, return_inverse=True, return_counts=True)
    if (counts == 1).all():
        return adata
    if mode == "error":
        shown = ", ".join(uniq[counts > 1][:5])
        msg = f"{source}: {int((counts > 1).sum())} gene name(s) occur more than once (e.g. {shown}); pass --duplicate-genes sum to add their counts"
        raise SpadeInputError(msg)
    if mode != "sum":
        msg = f"duplicate_genes must be 'error' or 'sum', got {mode!r}"
        raise ValueError(msg)
    import anndata as ad

    agg = sp.csr_matrix((np.ones(len(names)), (np.arange(len(names)), inverse)), shape=(len(names), len(uniq)))
    X = sp.csr_matrix(adata.X) @ agg
    var = adata.var.iloc[first].copy()
    var.index = pd.Index(uniq)
    out = ad.AnnData(X=X, obs=adata.obs.copy(), var=var)
    out.obsm = dict(adata.obsm)
    return out


def _infer_pixel_size(adata) -> float | None:
    """Pixel size from Visium-style ``uns['spatial'][lib]['scalefactors']['spot_diameter_fullres']``."""
    lib = adata.uns.get("spatial") if hasattr(adata, "uns") else None
    if isinstance(lib, dict) and len(lib) == 1:
        sf = next(iter(lib.values())).get("scalefactors", {})
        d = sf.get("spot_diameter_fullres")
        if d:
            return K.VISIUM_SPOT_UM / float(d)
    return None


def convert_anndata(cfg: AnnDataConfig, progress: bool = True) -> Path:
    """Convert an h5ad (raw counts in X or ``layer``) plus its full-resolution image into ``cfg.out``."""
    import anndata as ad

    p = require_file(cfg.adata, "AnnData file")
    try:
        adata = ad.read_h5ad(p)
    except (OSError, KeyError, ValueError, TypeError) as err:
        msg = f"cannot read {p}: {type(err).__name__}: {err}. Is it a complete .h5ad file?"
        raise SpadeInputError(msg) from err
    if cfg.layer is not None:
        if cfg.layer == "raw":
            if adata.raw is None:
                msg = f"{p} has no .raw; choose one of layers {list(adata.layers)}"
                raise SpadeInputError(msg)
            adata = ad.AnnData(X=adata.raw.X, obs=adata.obs, var=adata.raw.var, obsm=dict(adata.obsm))
        elif cfg.layer not in adata.layers:
            msg = f"{p} has no layer {cfg.layer!r}; layers: {list(adata.layers)}"
            raise SpadeInputError(msg)
        else:
            adata = ad.AnnData(
                X=adata.layers[cfg.layer], obs=adata.obs, var=adata.var, obsm=dict(adata.obsm), uns=adata.uns
            )
    if cfg.spatial_key not in adata.obsm:
        msg = f"{p} has no obsm[{cfg.spatial_key!r}] with spot centres (keys: {list(adata.obsm)}); pass --spatial-key"
        raise SpadeInputError(msg)
    adata.obsm[K.SPATIAL] = np.asarray(adata.obsm[cfg.spatial_key], dtype=np.float64)[:, :2]
    adata = merge_duplicate_genes(adata, cfg.duplicate_genes, str(p))
    image, own_px = load_full_image(cfg.image)
    px = cfg.pixel_size_um
    if px is None:
        px = own_px if own_px is not None else _infer_pixel_size(adata)
    meta = SampleMeta(
        organ=cfg.organ, patient=cfg.patient, st_technology=cfg.st_technology, species=_species(cfg, adata, p)
    )
    slim = ad.AnnData(X=adata.X, obs=adata.obs.copy(), var=adata.var.copy(), obsm={K.SPATIAL: adata.obsm[K.SPATIAL]})
    return write_sample(
        cfg.out,
        cfg.sample_id,
        slim,
        image,
        px,
        meta,
        overwrite=cfg.overwrite,
        source=plain(cfg),
        coords_fix=f"obsm[{cfg.spatial_key!r}] must be in pixels of --image (full resolution); rescale it first",
        progress=progress,
    )
