"""``spade-st view``: a zoomable viewer folder per slide, ``VIEW/<slide>/index.html``, that opens from disk.

No server, no network: the page, its script, the tile pyramid and the overlays are files of the folder (zip it
and open it elsewhere). Everything is checked before the first tile is written.
"""

from __future__ import annotations

import html
import json
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ... import __version__
from ... import _keys as K
from ..._atomic import atomic_write_json, atomic_write_text
from ..._validation import SpadeInputError
from ._pyramid import Pyramid, write_pyramid

ASSETS = ("viewer.js", "viewer.css")  #: copied into every viewer folder beside index.html


@dataclass
class ViewConfig:
    """Options of ``spade-st view``."""

    wsi: list[Path]
    predictions: Path  #: what ``spade-st predict --out`` wrote (a folder of ``<slide>.h5ad``), or one h5ad
    out: Path
    sample: list[str] | None = None  #: the predictions' names of the slides, in --wsi order (default: file stems)
    model: Path | None = None  #: routing from this model, on the feature files the predictions name
    data: Path | None = None  #: HEST root: measured expression where a slide is one of its samples
    pixel_size_um: float | None = None  #: level-0 µm/px of slides that record none
    progress: bool = True


@dataclass
class _Slide:
    name: str
    wsi_path: Path
    h5ad: Path
    pixel_size_um: float
    features: Path | None
    sample: object = None  #: the HEST sample of --data the slide is (None: not one, or no --data)


def _say(cfg: ViewConfig, text: str) -> None:
    if cfg.progress:
        print(f"view: {text}", file=sys.stderr, flush=True)


def _h5ads(pred: Path) -> dict[str, Path]:
    if pred.is_file() and pred.suffix == ".h5ad":
        return {pred.stem: pred}
    if pred.is_dir():
        return {p.stem: p for p in sorted(pred.glob("*.h5ad"))}
    msg = f"--predictions {pred} is neither a folder of .h5ad files nor one .h5ad; pass what `spade-st predict --out` wrote"
    raise SpadeInputError(msg)


def _pixel_size(wsi, given: float | None, features: Path | None, name: str) -> float:
    """The slide's own µm/px, else ``given``, else what the feature file was extracted with."""
    if wsi.has_pixel_size:
        return float(wsi.pixel_size_um)
    if features is not None and features.is_file():
        from ...io.features import read_feature_attrs

        px = read_feature_attrs(features).get("pixel_size_um")
        if px is not None and np.isfinite(float(px)) and float(px) > 0:
            return float(px)
    msg = f"slide {wsi.path} of {name} records no pixel size (µm/px); pass --pixel-size-um (e.g. 0.25 for 40x)"
    raise SpadeInputError(msg)


def _check(cfg: ViewConfig) -> list[_Slide]:
    """Every input checked (slides open, predictions readable, names paired) before any work."""
    import h5py

    from ...io.wsi import open_wsi

    if not cfg.wsi:
        msg = "no slide given; pass --wsi SLIDE (the slide the predictions were made on)"
        raise SpadeInputError(msg)
    names = list(cfg.sample) if cfg.sample else [Path(w).stem for w in cfg.wsi]
    if len(names) != len(cfg.wsi):
        msg = f"--sample names {len(names)} predictions for {len(cfg.wsi)} --wsi slides; give one name per slide"
        raise SpadeInputError(msg)
    if len(set(names)) != len(names):
        msg = f"two slides would share one viewer folder: {sorted(names)}; give each its own --sample name"
        raise SpadeInputError(msg)
    have = _h5ads(Path(cfg.predictions))
    missing = [n for n in names if n not in have]
    if missing:
        msg = (
            f"no predictions for {missing} in {cfg.predictions} (it has {sorted(have) or 'none'}); run "
            "`spade-st predict` on those slides, or name them with --sample"
        )
        raise SpadeInputError(msg)
    if cfg.model is not None and not (Path(cfg.model) / "config.json").is_file():
        msg = f"--model {cfg.model} is not a model folder (no config.json); pass the --out of `spade-st pretrain`"
        raise SpadeInputError(msg)
    slides = []
    for name, w in zip(names, cfg.wsi, strict=True):
        with h5py.File(have[name], "r") as f:
            if "obsm" not in f or K.SPATIAL not in f["obsm"]:
                msg = f"{have[name]} has no obsm['spatial'] (tile centres); write it with `spade-st predict`"
                raise SpadeInputError(msg)
            feats = f["uns/spade_prediction/features"][()] if "uns/spade_prediction/features" in f else None
            rows = int(f["obsm"][K.SPATIAL].shape[0])
        feats = Path(feats.decode() if isinstance(feats, bytes) else str(feats)) if feats is not None else None
        if cfg.model is not None and (feats is None or not feats.is_file()):
            msg = (
                f"{have[name]} names the feature file {feats}, which is not there; routing with --model needs it "
                "(restore it, or leave out --model)"
            )
            raise SpadeInputError(msg)
        if cfg.model is not None:
            from ...io.features import feature_shape

            n = feature_shape(feats)[0]
            if n != rows:
                msg = f"{feats} has {n} rows, the predictions {rows}: not the file they were made from; re-run predict"
                raise SpadeInputError(msg)
        with open_wsi(w, pixel_size_um=cfg.pixel_size_um) as slide:
            px = _pixel_size(slide, cfg.pixel_size_um, feats, name)
            smp = _sample(cfg, name, slide, Path(w))
        slides.append(_Slide(name, Path(w), have[name], px, feats, smp))
    return slides


def _sample(cfg: ViewConfig, name: str, wsi, path: Path):
    """The sample ``name`` of ``cfg.data`` (checked: ``wsi`` is its image's size), or None when it is none."""
    if cfg.data is None:
        return None
    from ...io import read_hest
    from ...io.layout import read_metadata

    if name not in set(map(str, read_metadata(cfg.data).index)):
        _say(cfg, f"{name}: measured expression skipped: not a sample of {cfg.data}")
        return None
    smp = read_hest(cfg.data, ids=[name])[0]
    with smp.wsi() as own:
        if tuple(own.dimensions) != tuple(wsi.dimensions):
            msg = (
                f"{path} is {wsi.dimensions[0]}x{wsi.dimensions[1]} px but sample {name}'s image is "
                f"{own.dimensions[0]}x{own.dimensions[1]}: its spots would be misplaced; pass its own image "
                f"{Path(cfg.data) / 'wsis' / (name + '.tif')} as --wsi"
            )
            raise SpadeInputError(msg)
    return smp


def _measured(s: _Slide, pred):
    """The sample's measured expression of the predicted genes at its spots, or None."""
    if s.sample is None:
        return None
    from ...genes import expression_target
    from ...genes.symbols import match_names

    smp = s.sample
    genes = list(pred.var_names)
    found = match_names(genes, list(smp.adata.var_names))
    idx = [i for i, m in enumerate(found) if m is not None]
    y = expression_target(smp.adata, [genes[i] for i in idx])
    diameter = smp.meta.get("spot_diameter")
    diameter = float(diameter) if diameter is not None and float(diameter) > 0 else K.VISIUM_SPOT_UM
    xy = np.asarray(smp.adata.obsm[K.SPATIAL], float)
    return xy, diameter / s.pixel_size_um, smp.adata.obs_names, {i: y[:, k] for k, i in enumerate(idx)}


def _routing(cfg: ViewConfig, s: _Slide, pred):
    if "spade_expert_weights" in pred.obsm:
        return np.asarray(pred.obsm["spade_expert_weights"])
    if cfg.model is None:
        _say(cfg, f"{s.name}: routing skipped: the predictions carry no expert weights (pass --model)")
        return None
    from ...experts.model import SpadeModel
    from ...io.features import read_features

    fs = read_features(s.features)
    if list(map(str, fs.barcode if fs.barcode is not None else [f"tile_{i}" for i in range(len(fs))])) != list(
        map(str, pred.obs_names)
    ):
        msg = f"{s.features} does not hold the predictions' tiles in their order; re-run `spade-st predict`"
        raise SpadeInputError(msg)
    return SpadeModel.from_pretrained(cfg.model).route(np.asarray(fs.features, np.float32))


def _side(pred) -> float:
    if "tile_size" in pred.obs and len(pred.obs) and float(pred.obs["tile_size"].iloc[0]) > 0:
        return float(pred.obs["tile_size"].iloc[0])
    xy = np.asarray(pred.obsm[K.SPATIAL], float)[:, :2]
    if len(xy) < 2:
        return 224.0
    from scipy.spatial import cKDTree

    d = cKDTree(xy).query(xy, k=2)[0][:, 1]
    return float(np.median(d[d > 0])) if (d > 0).any() else 224.0


def _page(meta: dict) -> str:
    template = resources.files(__package__).joinpath("assets", "index.html").read_text(encoding="utf-8")
    data = json.dumps(meta, separators=(",", ":")).replace("</", "<\\/")
    return template.replace("{{TITLE}}", html.escape(meta["name"])).replace("{{META}}", data)


def write_viewer(cfg: ViewConfig, s: _Slide) -> Path:
    """One slide's viewer folder: pyramid (resumed), overlays, page; returns its ``index.html``."""
    import anndata as ad

    from ..._progress import progress
    from ...io.wsi import open_wsi
    from ._overlays import colormap, write_layers

    out = Path(cfg.out) / s.name
    out.mkdir(parents=True, exist_ok=True)
    pred = ad.read_h5ad(s.h5ad)
    t0 = time.perf_counter()
    with open_wsi(s.wsi_path, pixel_size_um=cfg.pixel_size_um) as wsi:
        measured = _measured(s, pred)
        routing = _routing(cfg, s, pred)
        n = Pyramid(int(wsi.dimensions[0]), int(wsi.dimensions[1])).n_levels
        with progress(total=n, desc=f"view {s.name}: pyramid", unit="level", disable=not cfg.progress) as bar:
            pyr, written = write_pyramid(wsi, out, bar=bar)
    skipped = pyr.n_levels - len(written)
    _say(cfg, f"{s.name}: {pyr.n_levels} levels ({len(written)} written, {skipped} already finished) "
         f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    over = write_layers(out, pred, _side(pred), routing, measured)
    for name in ASSETS:
        src = resources.files(__package__).joinpath("assets", name).read_bytes()
        dst = out / name
        if not dst.is_file() or dst.read_bytes() != src:
            atomic_write_text(dst, src.decode("utf-8"))
    how = pred.uns.get("spade_prediction", {})
    meta = {
        "name": s.name,
        "slide": s.wsi_path.name,
        "width": pyr.width,
        "height": pyr.height,
        "tile": pyr.tile,
        "levels": pyr.levels(),
        "pixel_size_um": s.pixel_size_um,
        "colormap": colormap("viridis"),
        "method": str(how.get("method", "")),
        "encoder": str(how.get("encoder", "")),
        "version": __version__,
        **over,
    }
    atomic_write_json(out / "view.json", {k: v for k, v in meta.items() if k != "colormap"} | {
        "predictions": str(s.h5ad), "wsi": str(s.wsi_path), "model": str(cfg.model or ""), "data": str(cfg.data or "")})  # fmt: skip
    index = out / "index.html"
    atomic_write_text(index, _page(meta))
    return index


def write_viewers(cfg: ViewConfig) -> list[Path]:
    """Write ``OUT/<slide>/index.html`` (and its tiles and overlays) for every slide; returns the pages.

    Parameters
    ----------
    cfg
        :class:`ViewConfig`. Slides are paired with the predictions ``<name>.h5ad`` by name (``cfg.sample``,
        default the slides' file stems). Everything is checked before the first tile is written; a rerun
        reuses every finished pyramid level.

    Returns
    -------
    list of Path
        The ``index.html`` of each slide (open it in a browser: no server needed).
    """
    slides = _check(cfg)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    pages = []
    for s in slides:
        page = write_viewer(cfg, s)
        _say(cfg, f"{s.name}: {page}")
        pages.append(page)
    return pages


def viewer_page(view_root: Path | str, name: str) -> Path | None:
    """``VIEW/<name>/index.html`` when that viewer was written, else None (for links from ``report``)."""
    p = Path(view_root) / name / "index.html"
    return p if p.is_file() else None
