"""Converter for 10x Visium Space Ranger output folders into the HEST layout."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _keys as K
from .._atomic import plain
from .._validation import SpadeInputError, require_file
from .anndata_io import merge_duplicate_genes
from .writer import SampleMeta, write_sample
from .wsi import load_full_image, read_image

VISIUM_PITCH_UM = 100.0


@dataclass
class VisiumConfig:
    """Options of ``spade-st convert visium``."""

    spaceranger: Path
    sample_id: str
    out: Path
    image: Path | None = None
    pixel_size_um: float | None = None
    organ: str = "unknown"
    patient: str | None = None
    species: str = "Homo sapiens"
    duplicate_genes: str = "sum"
    overwrite: bool = False


def read_10x_h5(path: Path | str):
    """Read a Space Ranger ``filtered_feature_bc_matrix.h5`` (v3 layout) as AnnData with gene symbols."""
    import anndata as ad

    p = require_file(path, "10x matrix", "expected DIR/filtered_feature_bc_matrix.h5 from Space Ranger")
    try:
        with h5py.File(p, "r") as f:
            m = f["matrix"]
            shape = tuple(int(v) for v in m["shape"][()])
            X = sp.csc_matrix((m["data"][()], m["indices"][()], m["indptr"][()]), shape=shape).T.tocsr()
            barcodes = [b.decode() for b in m["barcodes"][()]]
            feats = m["features"]
            names = [b.decode() for b in feats["name"][()]]
            ids = [b.decode() for b in feats["id"][()]]
            ftype = (
                [b.decode() for b in feats["feature_type"][()]]
                if "feature_type" in feats
                else ["Gene Expression"] * len(ids)
            )
    except (OSError, KeyError) as err:
        msg = f"cannot read 10x matrix {p}: {err}. Expected a Space Ranger v3+ feature-barcode matrix h5"
        raise SpadeInputError(msg) from err
    var = pd.DataFrame({"gene_ids": ids, "feature_types": ftype}, index=pd.Index(names))
    with warnings.catch_warnings():  # repeated symbols are handled by merge_duplicate_genes
        warnings.filterwarnings("ignore", message="Variable names are not unique")
        keep = np.asarray(ftype) == "Gene Expression"
        return ad.AnnData(X=X[:, keep], obs=pd.DataFrame(index=pd.Index(barcodes)), var=var.iloc[keep])


def read_tissue_positions(spatial_dir: Path) -> pd.DataFrame:
    """``tissue_positions.csv`` (Space Ranger ≥2, header) or ``tissue_positions_list.csv`` (1.x, none)."""
    cols = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
    new, old = spatial_dir / "tissue_positions.csv", spatial_dir / "tissue_positions_list.csv"
    if new.is_file():
        df = pd.read_csv(new)
    elif old.is_file():
        df = pd.read_csv(old, header=None, names=cols)
    else:
        msg = f"no tissue positions in {spatial_dir}: expected tissue_positions.csv or tissue_positions_list.csv"
        raise FileNotFoundError(msg)
    if not set(cols) <= set(df.columns):
        msg = f"tissue positions in {spatial_dir} lack columns {sorted(set(cols) - set(df.columns))}"
        raise SpadeInputError(msg)
    return df.set_index("barcode")


def convert_visium(cfg: VisiumConfig, progress: bool = True) -> Path:
    """Convert a Space Ranger output folder into ``cfg.out``. Returns the root.

    The pixel size comes from ``--pixel-size-um``, else from the full-resolution image's own tags, else from
    the 55 µm spot diameter and ``spot_diameter_fullres`` of ``scalefactors_json.json``.
    """
    d = Path(cfg.spaceranger)
    if not d.is_dir():
        msg = f"Space Ranger folder {d} does not exist"
        raise FileNotFoundError(msg)
    adata = read_10x_h5(d / "filtered_feature_bc_matrix.h5")
    adata = merge_duplicate_genes(adata, cfg.duplicate_genes, f"sample {cfg.sample_id}")
    spatial = d / "spatial"
    pos = read_tissue_positions(spatial)
    sf_path = require_file(spatial / "scalefactors_json.json", "Space Ranger scale factors")
    try:
        sf = json.loads(sf_path.read_text())
    except json.JSONDecodeError as err:
        msg = f"cannot parse {sf_path}: {err}"
        raise SpadeInputError(msg) from err
    missing = [b for b in adata.obs_names if b not in pos.index]
    if missing:
        msg = f"{len(missing)} barcode(s) of the matrix are not in the tissue positions (e.g. {missing[0]}); is the spatial/ folder from the same run?"
        raise SpadeInputError(msg)
    pos = pos.loc[adata.obs_names]
    xy = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(np.float64)
    adata.obs["in_tissue"] = pos["in_tissue"].to_numpy()
    adata.obs["array_row"] = pos["array_row"].to_numpy()
    adata.obs["array_col"] = pos["array_col"].to_numpy()
    diam = float(sf.get("spot_diameter_fullres", np.nan))
    px = cfg.pixel_size_um
    if cfg.image is not None:
        image, own_px = load_full_image(cfg.image)
        px = px if px is not None else own_px
    else:
        hires = require_file(spatial / "tissue_hires_image.png", "hires image", "or pass --image FULLRES")
        scale = float(sf["tissue_hires_scalef"])
        image = read_image(hires)
        xy = xy * scale
        diam = diam * scale
    if px is None:
        if not np.isfinite(diam) or diam <= 0:
            msg = f"unknown pixel size: the image has none and {sf_path} has no spot_diameter_fullres; pass --pixel-size-um"
            raise SpadeInputError(msg)
        px = K.VISIUM_SPOT_UM / diam
    adata.obsm[K.SPATIAL] = xy
    meta = SampleMeta(
        organ=cfg.organ,
        patient=cfg.patient,
        species=cfg.species,
        st_technology="Visium",
        spot_diameter=K.VISIUM_SPOT_UM,
        inter_spot_dist=VISIUM_PITCH_UM,
    )
    return write_sample(
        cfg.out,
        cfg.sample_id,
        adata,
        image,
        px,
        meta,
        overwrite=cfg.overwrite,
        source=plain(cfg),
        progress=progress,
    )
