"""SpatialData out: a HEST sample or a predicted slide as a SpatialData zarr store (extra ``[scverse]``).

What is written, named after the sample or slide ``S``:

- ``images/S_image``: the H&E as a multiscale image (c, y, x), read lazily from the slide in chunks;
- ``shapes/S_spots``: the spots as circles of their real diameter, or ``shapes/S_tiles``: the tiles as squares;
- ``tables/table``: measured raw counts annotating the spots (obs ``barcode``; obsm ``spatial`` and, from feature
  files, ``X_<encoder>`` and ``X_spade``);
- ``tables/predicted``: predicted expression (``spade-st predict``) annotating the same spots or the tiles.

Coordinate systems: ``global`` is level-0 pixels (as spatialdata-io's Visium reader has it) and ``um`` is µm
(a scale by the pixel size), so squidpy and napari-spatialdata can show either.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import _keys as K
from .._atomic import tmp_sibling
from .._optional import require
from .._validation import SpadeInputError, require_file
from .features import feature_encoder, feature_files, is_spade_embedding, read_features

#: coordinate systems of everything written: level-0 pixels and micrometres
PIXELS, MICRONS = "global", "um"
#: the table names; instance key and region key of every table
COUNTS_TABLE, PREDICTED_TABLE = "table", "predicted"
INSTANCE_KEY, REGION_KEY = "spot_id", "region"


def _sd():
    return require("spatialdata", extra="scverse")


def _transforms(pixel_size_um: float | None) -> dict:
    from spatialdata.transformations import Identity, Scale

    t = {PIXELS: Identity()}
    if pixel_size_um:
        t[MICRONS] = Scale(np.array([pixel_size_um, pixel_size_um]), axes=("y", "x"))
    return t


def _scale_factors(width: int, height: int, smallest: int = 512) -> list[int]:
    """Halvings until the coarsest level is at most ``smallest`` px on its long side."""
    n, side = 0, max(width, height)
    while side > smallest:
        side //= 2
        n += 1
    return [2] * n


def lazy_image(wsi, chunk: int = 2048):
    """Level 0 of ``wsi`` as a dask array (3, h, w) uint8, read chunk by chunk when written."""
    import dask
    import dask.array as da

    w, h = wsi.dimensions
    lock = threading.Lock()  # one read at a time: slide readers are not all thread-safe

    def read(x: int, y: int, cw: int, ch: int) -> np.ndarray:
        with lock:
            region = wsi.read_region((x, y), 0, (cw, ch))
        return np.ascontiguousarray(np.asarray(region)[..., :3].transpose(2, 0, 1))

    rows = []
    for y in range(0, h, chunk):
        ch = min(chunk, h - y)
        row = []
        for x in range(0, w, chunk):
            cw = min(chunk, w - x)
            row.append(da.from_delayed(dask.delayed(read)(x, y, cw, ch), shape=(3, ch, cw), dtype=np.uint8))
        rows.append(row)
    return da.block([rows])  # one channel block, rows of column blocks


def _image_element(wsi, pixel_size_um: float | None):
    from spatialdata.models import Image2DModel

    w, h = wsi.dimensions
    return Image2DModel.parse(
        lazy_image(wsi),
        dims=("c", "y", "x"),
        scale_factors=_scale_factors(w, h),
        chunks=(3, 1024, 1024),
        c_coords=["r", "g", "b"],
        transformations=_transforms(pixel_size_um),
    )


def _circles(xy: np.ndarray, radius_px: float, pixel_size_um: float | None):
    from spatialdata.models import ShapesModel

    return ShapesModel.parse(
        np.asarray(xy, np.float64),
        geometry=0,
        radius=np.full(len(xy), float(radius_px)),
        index=pd.Index(np.arange(len(xy)), name=INSTANCE_KEY),
        transformations=_transforms(pixel_size_um),
    )


def _squares(xy: np.ndarray, side_px: float, pixel_size_um: float | None):
    import geopandas as gpd
    from shapely.geometry import box
    from spatialdata.models import ShapesModel

    h = float(side_px) / 2
    gdf = gpd.GeoDataFrame(
        geometry=[box(x - h, y - h, x + h, y + h) for x, y in np.asarray(xy, np.float64)],
        index=pd.Index(np.arange(len(xy)), name=INSTANCE_KEY),
    )
    return ShapesModel.parse(gdf, transformations=_transforms(pixel_size_um))


def _table(adata, region: str):
    from spatialdata.models import TableModel

    a = adata.copy()
    a.obs[INSTANCE_KEY] = np.arange(a.n_obs)
    a.obs[REGION_KEY] = pd.Categorical([region] * a.n_obs)
    return TableModel.parse(a, region=region, region_key=REGION_KEY, instance_key=INSTANCE_KEY)


def _add_features(adata, files: Sequence[Path | str], side: float | None = None) -> None:
    """``obsm['X_<encoder>']`` / ``obsm['X_spade']`` from feature or embedding files, matched to the rows: by
    barcode for spots, by tile position for a slide's tiles (``side``: their level-0 size)."""
    from .barcodes import match_barcodes

    for f in files:
        fs = read_features(f)
        if side is None and fs.barcode is None:
            msg = f"{f} has no barcodes, so its rows cannot be matched to the sample's spots; pass the sample's own feature file"
            raise SpadeInputError(msg)
        if side is None:
            pos = match_barcodes(adata.obs_names, fs.barcode, f"the spots, in {f}", among=f"rows of {f}")
        else:
            c = None if fs.coords is None else np.asarray(fs.coords, np.float64).reshape(len(fs), -1)[:, :2] + side / 2
            if c is None or len(c) != adata.n_obs or not np.allclose(c, adata.obsm[K.SPATIAL], atol=0.5):
                msg = f"{f} does not hold the predicted tiles (other count or positions); pass the feature file the prediction was made from"
                raise SpadeInputError(msg)
            pos = np.arange(len(fs))
        spade = is_spade_embedding(fs.attrs)
        enc = feature_encoder(f, fs.attrs)
        if not spade and enc is None:
            msg = f"{f} does not name its encoder; write it with `spade-st extract` (or rename its folder features_<encoder>)"
            raise SpadeInputError(msg)
        key = K.SPADE if spade else K.features_key(enc)
        adata.obsm[key] = np.asarray(fs.features, np.float32)[pos]
        if spade and "expert_weights" in fs.arrays:
            adata.obsm["spade_expert_weights"] = np.asarray(fs.arrays["expert_weights"], np.float32)[pos]


def _read_prediction(path: Path | str):
    import anndata as ad

    p = require_file(path, "prediction file (.h5ad)", "make it with `spade-st predict`")
    try:
        pred = ad.read_h5ad(p)
    except (OSError, KeyError, ValueError, TypeError) as err:
        msg = f"cannot read {p}: {type(err).__name__}: {err}. Is it an .h5ad written by `spade-st predict`?"
        raise SpadeInputError(msg) from err
    if K.SPATIAL not in pred.obsm:
        msg = f"{p} has no obsm['spatial'] (tile centres); predict from feature files that carry coords"
        raise SpadeInputError(msg)
    return pred


def _predicted_table(pred, region: str):
    import anndata as ad

    keep = ad.AnnData(
        X=np.asarray(pred.X, np.float32),
        obs=pred.obs.copy(),
        var=pred.var.copy(),
        obsm={K.SPATIAL: pred.obsm[K.SPATIAL]},
    )
    keep.uns["spade_prediction"] = dict(pred.uns.get("spade_prediction", {}))
    return _table(keep, region)


def _sample_elements(data, sample_id: str, features, prediction):
    """Image, spots and tables of one HEST-layout sample."""
    import anndata as ad

    from .hest import read_hest

    s = read_hest(data, ids=[sample_id], require_wsi=True)[0]
    px = s.pixel_size_um
    diameter = s.meta.get("spot_diameter")
    if diameter is None or not pd.notna(diameter) or not px:
        msg = f"sample {sample_id}: its metadata gives no spot_diameter (µm) or pixel size; add them to metadata/{sample_id}.json"
        raise SpadeInputError(msg)
    a = s.adata
    counts = ad.AnnData(
        X=a.X, obs=pd.DataFrame({"barcode": a.obs_names.astype(str)}, index=a.obs_names), var=a.var.copy()
    )
    counts.obsm[K.SPATIAL] = np.asarray(a.obsm[K.SPATIAL], np.float64)
    files = [f for p in features for f in _sample_file(p, sample_id)]
    _add_features(counts, files)
    region = f"{sample_id}_spots"
    tables = {COUNTS_TABLE: _table(counts, region)}
    if prediction is not None:
        from .barcodes import match_barcodes

        pred = _read_prediction(prediction)
        match_barcodes(pred.obs_names, counts.obs_names, str(prediction))  # duplicates and strangers refused
        if pred.n_obs != counts.n_obs:
            msg = f"{prediction} predicts {pred.n_obs} of the {counts.n_obs} spots of {sample_id}; predict from its whole feature file"
            raise SpadeInputError(msg)
        pred = pred[counts.obs_names].copy()  # in the sample's order
        tables[PREDICTED_TABLE] = _predicted_table(pred, region)
    shapes = {region: _circles(counts.obsm[K.SPATIAL], float(diameter) / px / 2, px)}
    return s.wsi(), px, shapes, tables, s.meta


def _sample_file(path, sample_id: str) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        p = p / f"{sample_id}.h5"
    return feature_files(p, "feature file", "run `spade-st extract` for the sample first")


def _slide_elements(prediction, wsi_path, features, pixel_size_um):
    from .wsi import open_wsi

    pred = _read_prediction(prediction)
    wsi = open_wsi(wsi_path, pixel_size_um=pixel_size_um)
    px = wsi.pixel_size_um if wsi.has_pixel_size else None
    side = float(pred.obs["tile_size"].iloc[0]) if "tile_size" in pred.obs and pred.n_obs else 0.0
    if not side:
        msg = (
            f"{prediction} does not record its tiles' size (obs['tile_size']); predict it with `spade-st predict --wsi`"
        )
        raise SpadeInputError(msg)
    name = Path(wsi_path).stem
    region = f"{name}_tiles"
    w, h = wsi.dimensions
    xy = pred.obsm[K.SPATIAL]
    if ((xy < 0) | (xy > [w, h])).any():
        msg = f"{prediction} has tiles outside the {w}x{h} px slide {wsi_path}; pass the slide it was predicted on"
        raise SpadeInputError(msg)
    _add_features(pred, [f for p in features for f in feature_files(p)], side=side)
    table = _predicted_table(pred, region)
    for key in [k for k in pred.obsm if k != K.SPATIAL]:
        table.obsm[key] = pred.obsm[key]
    return wsi, px, {region: _squares(pred.obsm[K.SPATIAL], side, px)}, {PREDICTED_TABLE: table}, {"id": name}


def to_spatialdata(
    *,
    data: Path | str | None = None,
    sample_id: str | None = None,
    prediction: Path | str | None = None,
    wsi: Path | str | None = None,
    features: Sequence[Path | str] = (),
    pixel_size_um: float | None = None,
    out: Path | str | None = None,
    overwrite: bool = False,
):
    """A HEST sample (``data`` + ``sample_id``) or a predicted slide (``prediction`` + ``wsi``) as SpatialData.

    Parameters
    ----------
    data, sample_id
        A HEST-layout root and one of its samples: image, spots (circles of the metadata's ``spot_diameter``) and
        the raw counts as ``tables['table']``.
    prediction
        ``spade-st predict``'s ``.h5ad``: with ``data``, of that sample's spots; else, with ``wsi``, of a slide's
        tiles (squares of ``obs['tile_size']``). Written as ``tables['predicted']``.
    wsi
        The slide the prediction was made on (slide mode).
    features
        Feature or embedding files (or folders of ``<sample_id>.h5``) added as ``obsm['X_<encoder>']`` /
        ``obsm['X_spade']`` (+ ``obsm['spade_expert_weights']``).
    pixel_size_um
        Level-0 µm/px of a slide that records none (slide mode).
    out
        Write the store here (``.zarr``), atomically; an existing store is replaced only with ``overwrite``.

    Returns
    -------
    spatialdata.SpatialData
    """
    sd = _sd()
    if (data is None and prediction is None and wsi is None) or (data is not None and sample_id is None):
        msg = "give either data= and sample_id= (a HEST sample) or prediction= and wsi= (a predicted slide)"
        raise SpadeInputError(msg)
    if data is not None and wsi is not None:
        msg = "wsi= is for a predicted slide; a HEST sample (data=) brings its own image: drop one of them"
        raise SpadeInputError(msg)
    if data is None and (prediction is None or wsi is None):
        msg = "a predicted slide needs both prediction= (predict's .h5ad) and wsi= (the slide)"
        raise SpadeInputError(msg)
    dst = Path(out) if out is not None else None
    if dst is not None and dst.exists() and not overwrite:
        msg = f"{dst} exists; pass overwrite=True (--overwrite) to replace it"
        raise SpadeInputError(msg)
    if data is not None:
        slide, px, shapes, tables, meta = _sample_elements(data, sample_id, features, prediction)
    else:
        slide, px, shapes, tables, meta = _slide_elements(prediction, wsi, features, pixel_size_um)
    name = str(meta.get("id") or sample_id)
    sdata = sd.SpatialData(images={f"{name}_image": _image_element(slide, px)}, shapes=shapes, tables=tables)
    sdata.attrs["spade_st"] = {"pixel_size_um": px, "source": name, "spot_diameter_um": meta.get("spot_diameter")}
    if dst is not None:
        write_spatialdata(sdata, dst)
    return sdata


def write_spatialdata(sdata, path: Path | str) -> Path:
    """Write ``sdata`` to ``path`` atomically: a complete store or none. An old store is moved aside only once
    the new one is complete, and put back if the swap fails."""
    dst = Path(path)
    tmp = tmp_sibling(dst)
    try:
        sdata.write(tmp, overwrite=False)
        old = tmp_sibling(dst, ".old") if dst.exists() else None
        if old is not None:
            dst.rename(old)
        try:
            os.replace(tmp, dst)
        except OSError:
            if old is not None:
                old.rename(dst)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    sdata.path = dst  # it was written to the temporary name
    return dst
