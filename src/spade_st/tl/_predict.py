"""Expression maps for any slide: feature file (ours or TRIDENT's) -> AnnData of predicted expression + PNG.

``spade-st predict`` is :func:`predict_slides`; notebooks use :func:`read_features` and
:func:`~spade_st.tl.predict_expression`.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _keys as K
from .._atomic import atomic_path
from .._validation import DataWarning, SpadeInputError, require_file


def _tile_side(attrs: dict, level0_um: float | None) -> float | None:
    """Side of a feature file's tiles in level-0 pixels, from its attributes (ours, TRIDENT's) or the slide."""
    a = {k: attrs.get(k) for k in ("patch_size_level0", "patch_size", "level0_magnification", "target_magnification")}
    ok = {k: float(v) for k, v in a.items() if v not in (None, "") and np.isfinite(float(v)) and float(v) > 0}
    if "patch_size_level0" in ok:
        return ok["patch_size_level0"]
    if {"patch_size", "level0_magnification", "target_magnification"} <= set(ok):  # TRIDENT
        return ok["patch_size"] * ok["level0_magnification"] / ok["target_magnification"]
    px = attrs.get("pixel_size_um")
    if {"patch_size", "level0_magnification"} <= set(ok) and px:  # ours: level-0 µm/px = 10 / magnification
        return ok["patch_size"] * float(px) * ok["level0_magnification"] / 10.0
    if level0_um:
        return K.PATCH_SIZE * K.PATCH_PIXEL_SIZE_UM / level0_um
    return None


def _file_encoder(path, attrs: dict, encoder: str | None) -> str:
    """``encoder``, else the encoder the file names; a file that names none (TRIDENT's) needs ``encoder``."""
    enc = encoder or str(attrs.get("encoder") or "") or None
    if enc is None:
        msg = f"{path} does not name its encoder (TRIDENT files do not); pass --encoder NAME (encoder= in Python)"
        raise SpadeInputError(msg)
    return enc


def read_features(path, encoder: str | None = None, level0_um: float | None = None):
    """A feature file (ours or TRIDENT's) as AnnData.

    Parameters
    ----------
    path
        The ``.h5`` file.
    encoder
        Its encoder, for files that do not name it (TRIDENT's).
    level0_um
        The slide's level-0 µm/px, when the file's attributes do not give the tile size.

    Returns
    -------
    anndata.AnnData: ``obsm['X_<encoder>']``, ``obsm['spatial']`` (tile centres, level-0 px), obs names = the
    file's barcodes (spots) or ``tile_<i>``, ``uns['spade']`` (source, encoder, tile_size in level-0 px, spots).
    """
    import anndata as ad
    import pandas as pd

    from ..io.features import read_features as read_file

    fs = read_file(path)
    enc = _file_encoder(path, fs.attrs, encoder)
    names = fs.barcode.astype(str) if fs.barcode is not None else np.array([f"tile_{i}" for i in range(len(fs))])
    a = ad.AnnData(obs=pd.DataFrame(index=pd.Index(names)))
    a.obsm[K.features_key(enc)] = np.asarray(fs.features, np.float32)
    side = _tile_side(fs.attrs, level0_um)
    if fs.coords is not None:
        c = np.asarray(fs.coords, np.float64).reshape(len(fs), -1)[:, :2]
        if side is None:
            warnings.warn(
                f"{path}: the tile size cannot be told (no patch_size_level0, no magnifications, no slide pixel "
                "size), so obsm['spatial'] holds the tiles' top-left corners, not their centres; pass the slide",
                DataWarning,
                stacklevel=2,
            )
        a.obsm[K.SPATIAL] = c + (side / 2 if side else 0.0)
    a.uns[K.UNS] = {"source": str(path), "encoder": enc, "tile_size": side or 0.0, "spots": fs.barcode is not None}
    return a


@dataclass
class PredictConfig:
    """Options of ``spade-st predict``."""

    model: Path
    features: list[Path]
    out: Path
    wsi: list[Path] | None = None  #: slides for the maps, matched to feature files by file stem
    encoder: str | None = None  #: the files' encoder when they do not name it (TRIDENT's)
    genes: list[str] | None = None  #: default: every gene of the head in the h5ad, the 4 most variable in the PNG
    method: str = "ridge"
    pixel_size_um: float | None = None  #: level-0 µm/px of slides that carry none
    data: Path | None = None  #: HEST root: compare with measured expression where a slide is one of its samples
    allow_train_overlap: bool = False  #: with ``data``: also score slides the model or head trained on
    n_maps: int = 4
    progress: bool = True


def _measured_r(root: Path, sid: str, pred) -> float | None:
    from ..genes import expression_target
    from ..genes.ridge import mean_pearson
    from ..io import read_hest
    from ..io.layout import read_metadata

    if sid not in set(map(str, read_metadata(root).index)):
        return None
    s = read_hest(root, ids=[sid])[0]
    pos = s.adata.obs_names.get_indexer(pred.obs_names)
    if (pos < 0).any():
        return None
    return mean_pearson(np.asarray(pred.X), expression_target(s.adata, list(pred.var_names))[pos])


def predict_slides(cfg: PredictConfig) -> list[Path]:
    """Predicted expression of every tile/spot of each feature file -> ``OUT/<stem>.h5ad`` and
    ``OUT/<stem>_expression.png`` (over the slide's thumbnail when ``wsi`` has it). Checks everything first."""
    from ..experts.model import SpadeModel
    from ..experts.predictor import ExpressionPredictor
    from ..io.wsi import open_wsi
    from ..pl import spatial
    from ._embed import predict_expression

    model = SpadeModel.from_pretrained(cfg.model)
    head = model.predictor or ExpressionPredictor.load(cfg.model)  # no head: the error says how to add one
    head.gene_index(cfg.genes)  # unknown genes refused before any work
    files = [Path(f) for f in cfg.features]
    stems = [f.stem for f in files]
    if len(set(stems)) != len(stems):
        msg = f"feature files with the same name would overwrite each other's outputs: {sorted(stems)}; rename them"
        raise SpadeInputError(msg)
    from ..io.features import read_feature_attrs

    for f in files:  # every file checked (attributes only) before anything is written
        require_file(f, "feature file", "make it with `spade-st extract-wsi --wsi SLIDE` (or TRIDENT)")
        enc = _file_encoder(f, read_feature_attrs(f), cfg.encoder)  # also refuses a file without a feature array
        if enc != model.config.encoder:
            msg = f"{f} holds {enc} features; the model takes {model.config.encoder} (extract with that encoder)"
            raise SpadeInputError(msg)
    slides = {Path(w).stem: Path(w) for w in (cfg.wsi or [])}
    unknown = sorted(set(slides) - {f.stem for f in files})
    if unknown:
        msg = f"--wsi {unknown} match no feature file by name (stems: {[f.stem for f in files]})"
        raise SpadeInputError(msg)
    leaks = {}
    if cfg.data:  # the leakage guard: measured-vs-predicted r only for slides the model never trained on
        from ..eval.leakage import check_no_overlap, model_training_samples, overlap
        from ..io.layout import read_metadata

        table = read_metadata(cfg.data)
        scored = [f.stem for f in files if f.stem in set(map(str, table.index))]
        trained = [*model_training_samples(cfg.model), *head.info.get("samples", [])]
        leaks = check_no_overlap({"--model": Path(cfg.model)}, scored, None, cfg.allow_train_overlap)
        head_seen = [s for s in scored if s in head.info.get("samples", [])]
        if head_seen and not cfg.allow_train_overlap:
            msg = (
                f"the model's expression head was fitted on {', '.join(head_seen)}, scored here with --data; "
                "predict held-out slides, or pass --allow-train-overlap for a deliberate in-sample check"
            )
            raise SpadeInputError(msg)
        leaks = {s: "the head was fitted on it" for s in head_seen} | leaks.get("--model", {})  # the model's first
        # a held-out section of a training patient is a within-patient figure: said, not refused
        leaks = {s: why for s, why in overlap(trained, scored, table).items() if s not in leaks} | leaks
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f in files:
        wsi = open_wsi(slides[f.stem], pixel_size_um=cfg.pixel_size_um) if f.stem in slides else None
        level0 = wsi.pixel_size_um if wsi is not None and wsi.has_pixel_size else None
        adata = read_features(f, encoder=cfg.encoder, level0_um=level0)
        pred = predict_expression(adata, model, cfg.genes, method=cfg.method, predictor=head)
        pred.uns["spade_prediction"]["features"] = str(f)
        dst = out / f"{f.stem}.h5ad"
        with atomic_path(dst) as tmp:
            pred.write_h5ad(tmp)
        written.append(dst)
        r = _measured_r(Path(cfg.data), f.stem, pred) if cfg.data else None
        if cfg.progress:
            seen = ""
            if f.stem in leaks:
                kind = "within-patient" if leaks[f.stem].startswith("same patient") else "in-sample, not held out"
                seen = f" ({kind}: {leaks[f.stem]})"
            extra = f"; mean Pearson r vs measured over {pred.n_vars} genes: {r:.3f}{seen}" if r is not None else ""
            print(f"predict: {f.stem}: {pred.n_obs} tiles x {pred.n_vars} genes -> {dst}{extra}", file=sys.stderr)
        if K.SPATIAL not in pred.obsm:
            if wsi is not None:
                wsi.close()
            continue
        order = np.argsort(-np.asarray(pred.X).var(0))
        show = list(pred.var_names if cfg.genes else pred.var_names[order[: cfg.n_maps]])
        thumb, scale = None, 1.0
        if wsi is not None:
            thumb = wsi.get_thumbnail(1200)
            scale = wsi.dimensions[0] / thumb.shape[1]
            wsi.close()
        side = adata.uns[K.UNS]["tile_size"] or None
        spots = adata.uns[K.UNS]["spots"]
        spatial(
            pred,
            show,
            img=thumb,
            scale=scale,
            tile_size=None if spots else side,
            title=f"{f.stem}: predicted expression ({cfg.method}, {model.config.encoder} + SPADE)",
            save=out / f"{f.stem}_expression.png",
        )
        written.append(out / f"{f.stem}_expression.png")
    return written
