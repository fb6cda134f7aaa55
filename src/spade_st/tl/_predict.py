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
from .._dist import barrier, init_distributed, shard
from .._validation import DataWarning, SpadeInputError


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
    """The file's encoder (:func:`~spade_st.io.features.feature_encoder`); a file nothing names it for needs
    ``encoder``."""
    from ..io.features import feature_encoder

    enc = feature_encoder(path, attrs, encoder)
    if enc is None:
        msg = f"{path} does not name its encoder (TRIDENT files do not); pass --encoder NAME (encoder= in Python)"
        raise SpadeInputError(msg)
    return enc


def read_features(path, encoder: str | None = None, level0_um: float | None = None):
    """A feature file (ours or TRIDENT's) or a SPADE embedding file (``spade-st embed``) as AnnData.

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
    anndata.AnnData: ``obsm['X_<encoder>']`` (``obsm['X_spade']`` for an embedding file, with
    ``obsm['spade_expert_weights']``), ``obsm['spatial']`` (tile centres, level-0 px), ``obs['tissue_fraction']``
    where the file has it, obs names = the file's barcodes (spots) or ``tile_<i>``, ``uns['spade']`` (source,
    encoder, tile_size in level-0 px, spots).
    """
    import anndata as ad
    import pandas as pd

    from ..io.features import is_spade_embedding
    from ..io.features import read_features as read_file

    fs = read_file(path)
    enc = _file_encoder(path, fs.attrs, encoder)
    names = fs.barcode.astype(str) if fs.barcode is not None else np.array([f"tile_{i}" for i in range(len(fs))])
    a = ad.AnnData(obs=pd.DataFrame(index=pd.Index(names)))
    spade = is_spade_embedding(fs.attrs)
    a.obsm[K.SPADE if spade else K.features_key(enc)] = np.asarray(fs.features, np.float32)
    if spade and "expert_weights" in fs.arrays:
        a.obsm["spade_expert_weights"] = np.asarray(fs.arrays["expert_weights"], np.float32)
    if "tissue_fraction" in fs.arrays and len(fs.arrays["tissue_fraction"]) == len(fs):
        a.obs["tissue_fraction"] = np.asarray(fs.arrays["tissue_fraction"], np.float32)
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
        if side:
            a.obs["tile_size"] = np.float32(side)
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
    genes: list[str] | None = None  #: default: every gene of the head in the h5ad, its best-predicted in the PNG
    method: str = "ridge"
    pixel_size_um: float | None = None  #: level-0 µm/px of slides that carry none
    data: Path | None = None  #: HEST root: compare with measured expression where a slide is one of its samples
    allow_train_overlap: bool = False  #: with ``data``: also score slides the model or head trained on
    organ: str | None = None  #: the slides' organ, checked against the head's training organs
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


def _check_file(f: Path, model, encoder: str | None) -> None:
    """One feature file, read whole, against the model: encoder (named), width, rows, finiteness."""
    from ..experts.embed import check_feature_file, check_finite
    from ..io.features import read_feature_attrs
    from ..io.features import read_features as read_file

    check_feature_file(f, model, _file_encoder(f, read_feature_attrs(f), encoder))
    fs = read_file(f)
    if len(fs) == 0:
        msg = f"{f} has no tiles (a blank slide?); re-extract it with `spade-st extract-wsi`, or leave it out"
        raise SpadeInputError(msg)
    check_finite(fs, f)


def _organ_caveat(head, stems: list[str], organ: str | None, table) -> None:
    """One warning when a slide's organ is not among the head's training organs, or nothing says what it is."""
    trained = [o.lower() for o in head.info.get("organs", [])]
    if not trained:
        return
    known = {}
    if table is not None and "organ" in table.columns:
        known = {
            s: str(table.loc[s, "organ"]) for s in stems if s in table.index and isinstance(table.loc[s, "organ"], str)
        }
    if organ:
        known = dict.fromkeys(stems, organ) | known
    said = "/".join(head.info["organs"])
    off = sorted({f"{s} ({o})" for s, o in known.items() if o.lower() not in trained})
    if off:
        warnings.warn(
            f"the expression head was fitted on {said} only; {', '.join(off)} is another tissue: its maps there "
            "are extrapolations",
            DataWarning,
            stacklevel=3,
        )
    elif len(known) < len(stems):
        warnings.warn(
            f"the expression head was fitted on {said}; pass --organ to check the slides against it (on other "
            "tissues its maps are extrapolations)",
            DataWarning,
            stacklevel=3,
        )


def _scanpy_spatial(pred, stem: str, thumb: np.ndarray, scale: float, side: float | None) -> None:
    """``uns['spatial'][stem]`` in scanpy's layout: the thumbnail as the hires image, its scale factor."""
    pred.uns["spatial"] = {
        stem: {
            "images": {"hires": thumb},
            "scalefactors": {
                "tissue_hires_scalef": 1.0 / scale,
                "spot_diameter_fullres": float(side or 1.0),
            },
            "metadata": {"source": "spade-st predict"},
        }
    }


def predict_slides(cfg: PredictConfig) -> list[Path]:
    """Predicted expression of every tile/spot of each feature file -> ``OUT/<stem>.h5ad`` and
    ``OUT/<stem>_expression.png`` (over the slide's thumbnail when ``wsi`` has it). Checks everything first.

    ``cfg.features`` may name files or folders of them. The maps show the genes the head predicts best (its
    cross-validated r) unless ``cfg.genes`` names them; genes under r = 0.1 are marked "not predicted".
    """
    from ..experts.model import SpadeModel
    from ..experts.predictor import ExpressionPredictor
    from ..io.features import feature_files
    from ..io.wsi import open_wsi
    from ..pl import spatial
    from ._embed import predict_expression

    model = SpadeModel.from_pretrained(cfg.model)
    head = model.predictor or ExpressionPredictor.load(cfg.model)  # no head: the error says how to add one
    if cfg.genes:
        from ..genes.symbols import unique_names

        cfg.genes = unique_names(cfg.genes)  # ERBB2 and erbb2 are one gene
    head.gene_index(cfg.genes)  # unknown genes refused before any work
    fix = "make them with `spade-st extract-wsi --wsi SLIDE` (or TRIDENT)"
    files = [f for p in cfg.features for f in feature_files(p, "feature files", fix)]
    stems = [f.stem for f in files]
    if len(set(stems)) != len(stems):
        msg = f"feature files with the same name would overwrite each other's outputs: {sorted(stems)}; rename them"
        raise SpadeInputError(msg)
    for f in files:  # every file checked before anything is written
        _check_file(f, model, cfg.encoder)
    slides = {Path(w).stem: Path(w) for w in (cfg.wsi or [])}
    unknown = sorted(set(slides) - set(stems))
    if unknown:
        msg = f"--wsi {unknown} match no feature file by name (stems: {stems})"
        raise SpadeInputError(msg)
    leaks, table = {}, None
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
    wsis = {stem: open_wsi(path, pixel_size_um=cfg.pixel_size_um) for stem, path in slides.items()}  # checked now
    _organ_caveat(head, stems, cfg.organ, table)
    best = head.best_genes(cfg.n_maps)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    info = init_distributed()  # under torchrun each rank maps its share of the files
    mine = shard(files, info)
    for stem in set(wsis) - {f.stem for f in mine}:
        wsis.pop(stem).close()  # another rank's slide
    written = []
    for f in mine:
        wsi = wsis.get(f.stem)
        level0 = wsi.pixel_size_um if wsi is not None and wsi.has_pixel_size else None
        adata = read_features(f, encoder=cfg.encoder, level0_um=level0)
        pred = predict_expression(adata, model, cfg.genes, method=cfg.method, predictor=head)
        pred.obs = adata.obs.copy()
        pred.uns["spade_prediction"]["features"] = str(f)
        side = adata.uns[K.UNS]["tile_size"] or None
        thumb, scale = None, 1.0
        if wsi is not None:
            thumb = wsi.get_thumbnail(1200)
            scale = wsi.dimensions[0] / thumb.shape[1]
            wsi.close()
            if K.SPATIAL in pred.obsm:
                _scanpy_spatial(pred, f.stem, thumb, scale, side)
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
            continue
        mapped = list(pred.var_names) if cfg.genes else best
        if cfg.progress:
            r_of = dict(zip(pred.var_names, pred.var["cv_r"], strict=True))
            said = ", ".join(f"{g} (CV r {r_of[g]:.2f})" if np.isfinite(r_of[g]) else g for g in mapped[:8])
            print(f"predict: {f.stem}: mapped {said} -> {f.stem}_expression.png", file=sys.stderr)
        spatial(
            pred,
            mapped,
            img=thumb,
            scale=scale,
            tile_size=None if adata.uns[K.UNS]["spots"] else side,
            pixel_size_um=level0,  # a scale bar in µm where the slide's pixel size is known
            title=f"{f.stem}: predicted expression ({cfg.method}, {model.config.encoder} + SPADE; CV r per panel)",
            save=out / f"{f.stem}_expression.png",
        )
        written.append(out / f"{f.stem}_expression.png")
    barrier(info)
    return written
