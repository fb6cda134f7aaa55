"""Converter for legacy Spatial Transcriptomics tables (the her2st format) into the HEST layout.

Input (per section ``S``): ``S.tsv.gz`` counts (rows = spots ``"{x}x{y}"``, columns = gene symbols),
``S_selection.tsv`` (``x y new_x new_y pixel_x pixel_y selected``), one H&E image, optional pathologist
labels ``S_labeled_coordinates.tsv`` (``x y ... label``, joined on rounded ``x``/``y``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import _keys as K
from .._atomic import plain
from .._validation import DataWarning, SpadeInputError, require_file
from .writer import SampleMeta, write_sample
from .wsi import read_image


@dataclass
class Her2stConfig:
    """Options of ``spade-st convert her2st``."""

    counts: Path
    spots: Path
    image: Path
    sample_id: str
    pixel_size_um: float
    out: Path
    coord_scale: float = 1.0
    organ: str = "Breast"
    patient: str | None = None
    labels: Path | None = None
    overwrite: bool = False


def _read_tsv(path: Path, what: str, **kw) -> pd.DataFrame:
    require_file(path, what)
    try:
        return pd.read_csv(path, sep="\t", **kw)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as err:
        msg = f"cannot parse {what} {path}: {err}. Is it a complete tab-separated file?"
        raise SpadeInputError(msg) from err


def read_her2st(cfg: Her2stConfig):
    """Build the section's AnnData (raw counts, ``obsm['spatial']`` in image pixels, ``obs['label']``)."""
    import anndata as ad

    counts = _read_tsv(Path(cfg.counts), "counts table", index_col=0)
    spots = _read_tsv(Path(cfg.spots), "spot selection table")
    need = {"x", "y", "pixel_x", "pixel_y", "selected"}
    if not need <= set(spots.columns):
        msg = f"spot table {cfg.spots} lacks columns {sorted(need - set(spots.columns))}; expected x y pixel_x pixel_y selected"
        raise SpadeInputError(msg)
    spots = spots[spots["selected"] == 1].copy()
    spots.index = spots["x"].round().astype(int).astype(str) + "x" + spots["y"].round().astype(int).astype(str)
    if spots.index.duplicated().any():
        msg = f"spot table {cfg.spots} lists {int(spots.index.duplicated().sum())} array position(s) twice among selected spots"
        raise SpadeInputError(msg)
    counts.index = counts.index.astype(str)
    keep = [b for b in counts.index if b in spots.index]
    if not keep:
        msg = (
            f"no spot of {cfg.counts} matches a selected spot of {cfg.spots} (count rows look like "
            f"{list(counts.index[:2])}, spots like {list(spots.index[:2])}); are they the same section?"
        )
        raise SpadeInputError(msg)
    if len(keep) < 0.9 * len(counts):
        warnings.warn(
            f"{cfg.sample_id}: only {len(keep)} of {len(counts)} count rows ({len(keep) / len(counts):.0%}) are selected "
            f"spots of {cfg.spots.name}; the rest are dropped. Are the counts and the spot table of the same section?",
            DataWarning,
            stacklevel=2,
        )
    x = counts.loc[keep]
    non_numeric = [c for c in x.columns if not pd.api.types.is_numeric_dtype(x[c])]
    if non_numeric:
        msg = f"counts table {cfg.counts}: column(s) {non_numeric[:3]} are not numeric; expected raw counts"
        raise SpadeInputError(msg)
    xy = spots.loc[keep, ["pixel_x", "pixel_y"]].to_numpy(np.float64) * float(cfg.coord_scale)
    obs = pd.DataFrame(index=pd.Index(keep, name="barcode"))
    obs["array_x"] = spots.loc[keep, "x"].to_numpy()
    obs["array_y"] = spots.loc[keep, "y"].to_numpy()
    if cfg.labels is not None:
        lab = _read_tsv(Path(cfg.labels), "label table")
        if not {"x", "y", "label"} <= set(lab.columns):
            msg = f"label table {cfg.labels} needs columns x, y, label"
            raise SpadeInputError(msg)
        lab = lab.dropna(subset=["x", "y"])
        key = lab["x"].round().astype(int).astype(str) + "x" + lab["y"].round().astype(int).astype(str)
        mapping = dict(zip(key, lab["label"].astype(str), strict=True))
        obs[K.LABEL] = pd.Categorical([mapping.get(b) for b in keep])
    adata = ad.AnnData(X=x.to_numpy(), obs=obs, var=pd.DataFrame(index=x.columns.astype(str)))
    adata.obsm[K.SPATIAL] = xy
    return adata


def convert_her2st(cfg: Her2stConfig, progress: bool = True) -> Path:
    """Convert one her2st section into ``cfg.out`` (HEST layout). Returns the root."""
    adata = read_her2st(cfg)
    image = read_image(cfg.image)
    meta = SampleMeta(
        organ=cfg.organ,
        patient=cfg.patient,
        st_technology="Spatial Transcriptomics",
        spot_diameter=100.0,
        inter_spot_dist=200.0,
        disease_state="Cancer",
        dataset_title="her2st",
    )
    source = plain(cfg)
    return write_sample(
        cfg.out,
        cfg.sample_id,
        adata,
        image,
        cfg.pixel_size_um,
        meta,
        overwrite=cfg.overwrite,
        source=source,
        progress=progress,
    )
