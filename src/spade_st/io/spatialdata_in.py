"""SpatialData in: one table of spots and its image from a SpatialData zarr store, as a HEST-layout sample.

Reads what spatialdata-io's Visium reader makes (``shapes/<id>`` circles in full-resolution pixels,
``tables/table`` with region key ``region`` and instance key ``spot_id``, ``images/<id>_full_image`` or the
hires image in its own ``downscaled_hires`` system) and what :func:`spade_st.io.to_spatialdata` writes. The spot
centres are carried into the chosen image's pixels through the stores' own coordinate transformations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _keys as K
from .._atomic import plain
from .._optional import require
from .._validation import SpadeInputError
from .writer import SampleMeta, write_sample


@dataclass
class SpatialDataConfig:
    """Options of ``spade-st convert spatialdata``."""

    zarr: Path
    sample_id: str
    out: Path
    table: str | None = None  #: default: the store's only table, else ``table``
    image: str | None = None  #: default: the finest image sharing a coordinate system with the spots
    layer: str | None = None  #: raw counts from this layer (default: X)
    pixel_size_um: float | None = None  #: default: the store's ``um`` system, else the spot diameter
    spot_diameter_um: float | None = None  #: default: the metadata's, else 55 µm for Visium
    organ: str = "unknown"
    species: str = "Homo sapiens"
    patient: str | None = None
    st_technology: str = "Visium"
    overwrite: bool = False


def _pick(names: list[str], wanted: str | None, what: str, flag: str, default: str | None = None) -> str:
    if wanted is not None:
        if wanted not in names:
            msg = f"the store has no {what} {wanted!r} ({what}s: {names}); pass {flag} with one of them"
            raise SpadeInputError(msg)
        return wanted
    if len(names) == 1:
        return names[0]
    if default in names:
        return default
    msg = f"the store has {len(names)} {what}s {names}; pass {flag} to choose one"
    raise SpadeInputError(msg)


def _affine(element, cs: str) -> np.ndarray:
    """3x3 matrix from the element's intrinsic (x, y) to coordinate system ``cs``."""
    from spatialdata.transformations import get_transformation

    t = get_transformation(element, to_coordinate_system=cs)
    return np.asarray(t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=np.float64)


def _systems(element) -> set[str]:
    from spatialdata.transformations import get_transformation

    return set(get_transformation(element, get_all=True))


def _level0(image):
    """The full-resolution level of an image element (a DataTree of scales or one DataArray)."""
    if hasattr(image, "children") and "scale0" in getattr(image, "children", {}):
        return next(iter(image["scale0"].values()))
    return image


def _centres(shapes) -> tuple[np.ndarray, np.ndarray | None]:
    """Spot centres (x, y) in the shapes' own units and radii where they are circles."""
    geom = shapes.geometry
    if (geom.geom_type == "Point").all():
        xy = np.column_stack([geom.x.to_numpy(), geom.y.to_numpy()])
        radius = shapes["radius"].to_numpy(np.float64) if "radius" in shapes else None
        return xy, radius
    c = geom.centroid
    return np.column_stack([c.x.to_numpy(), c.y.to_numpy()]), None


def _choose_image(sdata, shapes, wanted: str | None) -> tuple[str, str, np.ndarray]:
    """(image name, shared coordinate system, shapes-units -> image-pixels matrix): the finest image unless named."""
    names = list(sdata.images)
    if not names:
        msg = "the store has no image: add the H&E (spatialdata-io: visium(..., fullres_image_file=...))"
        raise SpadeInputError(msg)
    candidates = []
    for name in [wanted] if wanted else names:
        if name not in names:
            msg = f"the store has no image {name!r} (images: {names}); pass --image with one of them"
            raise SpadeInputError(msg)
        shared = sorted(_systems(sdata.images[name]) & _systems(shapes))
        if not shared:
            continue
        m = np.linalg.inv(_affine(sdata.images[name], shared[0])) @ _affine(shapes, shared[0])
        candidates.append((abs(np.linalg.det(m[:2, :2])), name, shared[0], m))
    if not candidates:
        msg = f"no image of {names} shares a coordinate system with the spots; pass --image or fix the store's transformations"
        raise SpadeInputError(msg)
    _, name, cs, m = max(candidates, key=lambda c: c[0])  # most image pixels per spot unit: the finest
    return name, cs, m


def read_spatialdata_sample(cfg: SpatialDataConfig):
    """(AnnData with raw counts and ``obsm['spatial']`` in image pixels, RGB image, µm/px, spot diameter µm)."""
    import anndata as ad
    import pandas as pd

    sd = require("spatialdata", extra="scverse")
    p = Path(cfg.zarr)
    if not p.is_dir():
        msg = f"{p} is not a SpatialData zarr store (a folder); give the .zarr folder spatialdata wrote"
        raise SpadeInputError(msg)
    try:
        sdata = sd.read_zarr(p)
    except (OSError, KeyError, ValueError, TypeError) as err:
        msg = f"cannot read {p} as SpatialData: {type(err).__name__}: {err}"
        raise SpadeInputError(msg) from err
    tname = _pick(list(sdata.tables), cfg.table, "table", "--table", default="table")
    table = sdata.tables[tname]
    attrs = table.uns.get("spatialdata_attrs", {})
    region, ikey = attrs.get("region"), attrs.get("instance_key")
    if isinstance(region, list | tuple | np.ndarray):
        region = region[0] if len(region) == 1 else None
    if region is None or region not in sdata.shapes:
        msg = f"table {tname!r} does not annotate one shapes element (region {attrs.get('region')!r}); convert a table of spots"
        raise SpadeInputError(msg)
    shapes = sdata.shapes[region]
    pos = shapes.index.get_indexer(table.obs[ikey].to_numpy())
    if (pos < 0).any():
        msg = f"{(pos < 0).sum()} rows of table {tname!r} name no spot of shapes {region!r} (instance key {ikey!r})"
        raise SpadeInputError(msg)
    xy, radius = _centres(shapes)
    iname, cs, m = _choose_image(sdata, shapes, cfg.image)
    pix = (np.column_stack([xy, np.ones(len(xy))]) @ m.T)[:, :2][pos]
    if cfg.layer and cfg.layer not in table.layers:
        msg = f"table {tname!r} has no layer {cfg.layer!r}; layers: {list(table.layers)}"
        raise SpadeInputError(msg)
    X = table.layers[cfg.layer] if cfg.layer else table.X
    img = _level0(sdata.images[iname])
    channels = int(img.sizes.get("c", 0)) if hasattr(img, "sizes") else 0
    if img.dtype != np.uint8 or channels < 3:  # checked before the full image is read
        msg = f"image {iname!r} is {img.dtype} with {channels} channels; an RGB uint8 H&E is needed (--image)"
        raise SpadeInputError(msg)
    scale = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))  # image px per shapes unit
    px, diameter = _pixel_size(cfg, sdata, iname, radius[pos] if radius is not None else None, scale)
    arr = np.asarray(img.transpose("y", "x", "c").values)
    names = table.obs["barcode"].astype(str) if "barcode" in table.obs else table.obs_names.astype(str)
    a = ad.AnnData(X=X, obs=pd.DataFrame(index=pd.Index(np.asarray(names))), var=pd.DataFrame(index=table.var_names))
    a.obsm[K.SPATIAL] = pix
    source = {"table": tname, "shapes": region, "image": iname, "coordinate_system": cs}
    return a, np.ascontiguousarray(arr[..., :3]), px, diameter, source


def _pixel_size(cfg, sdata, iname: str, radius, scale: float) -> tuple[float, float | None]:
    """µm/px of the image: the flag, the store's ``um`` system, else a known spot diameter over the circles'."""
    image = sdata.images[iname]
    diameter_px = 2 * float(np.median(radius)) * scale if radius is not None and len(radius) else None
    px = cfg.pixel_size_um
    if px is None and "um" in _systems(image):
        px = float(np.sqrt(abs(np.linalg.det(_affine(image, "um")[:2, :2]))))
    known = cfg.spot_diameter_um or (sdata.attrs.get("spade_st") or {}).get("spot_diameter_um")
    if known is None and "visium" in cfg.st_technology.lower():
        known = K.VISIUM_SPOT_UM
    if px is None and known and diameter_px:
        px = float(known) / diameter_px
    if px is None:
        msg = "the store says nothing of the image's pixel size (no 'um' system, no spot circles of known size); pass --pixel-size-um"
        raise SpadeInputError(msg)
    return px, (diameter_px * px if diameter_px else known)


def convert_spatialdata(cfg: SpatialDataConfig, progress: bool = True) -> Path:
    """Write one table of spots of a SpatialData store, with its image, as sample ``cfg.sample_id`` of ``cfg.out``."""
    adata, image, px, diameter, source = read_spatialdata_sample(cfg)
    meta = SampleMeta(
        organ=cfg.organ,
        patient=cfg.patient,
        species=cfg.species,
        st_technology=cfg.st_technology,
        spot_diameter=round(diameter, 3) if diameter else None,
    )
    return write_sample(
        cfg.out,
        cfg.sample_id,
        adata,
        image,
        px,
        meta,
        overwrite=cfg.overwrite,
        source=plain(cfg) | source,
        coords_fix="the spots' transformation into the image's coordinate system is off; check the store or pass --image",
        progress=progress,
    )
