"""Fitting the model's expression head (:class:`~spade_st.experts.predictor.ExpressionPredictor`) on training spots.

Run at the end of pretraining and by ``spade-st fit-predictor`` (a model without a head, or a head for other
genes). The rows are the training samples' spots, paired with their features by barcode, subsampled to at
most ``max_spots`` (seeded) so the fit costs the same at HEST scale as on five sections.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .._progress import progress as tqdm
from .._validation import SpadeInputError
from ..experts.predictor import ExpressionPredictor
from ..genes import LIBRARY_SIZE, canonical, expression_target
from ..genes.ridge import choose_alpha, ridge_weights


def _cv_groups(samples: np.ndarray, coords: np.ndarray, n_strips: int = 5) -> np.ndarray:
    """Samples when there are two or more, else vertical strips of the one sample (spatially disjoint)."""
    if len(np.unique(samples)) >= 2:
        return samples
    x = coords[:, 0]
    edges = np.quantile(x, np.linspace(0, 1, n_strips + 1)[1:-1])
    return np.searchsorted(edges, x, side="right")


def fit_predictor(
    model,
    features: list[np.ndarray],
    targets: list[np.ndarray],
    coords: list[np.ndarray],
    samples: list[str],
    genes: list[str],
    max_spots: int = 50_000,
    n_prototypes: int = 512,
    k: int = 8,
    seed: int = 0,
) -> ExpressionPredictor:
    """Fit both methods on the rows of every sample (``features[i]``, ``targets[i]``, ``coords[i]``)."""
    from ..experts.kmeans import kmeans, nearest

    if not features or sum(len(f) for f in features) < 10:
        msg = "the expression head needs at least 10 training spots with features"
        raise SpadeInputError(msg)
    x = np.concatenate(features).astype(np.float32)
    y = np.concatenate(targets).astype(np.float64)
    xy = np.concatenate(coords).astype(np.float64)
    sid = np.concatenate([[s] * len(f) for s, f in zip(samples, features, strict=True)])
    rng = np.random.default_rng(seed)
    if len(x) > max_spots:
        keep = np.sort(rng.choice(len(x), max_spots, replace=False))
        x, y, xy, sid = x[keep], y[keep], xy[keep], sid[keep]
    z = model.embed(x)
    zl = z if model.config.output != "concat" else model.embed(x, latent=True)
    groups = _cv_groups(sid, xy)
    alpha = choose_alpha(z, y, groups)
    w, b = ridge_weights(z, y, alpha)
    p = int(min(n_prototypes, max(1, len(zl) // 5)))
    keys = kmeans(zl, p, seed=seed, niter=25, nredo=1, backend="sklearn" if len(zl) < 5000 else "auto")
    owner = nearest(zl, keys)[0]
    filled = np.bincount(owner, minlength=p) > 0
    values = np.stack([y[owner == j].mean(0) for j in np.flatnonzero(filled)])
    info = {
        "alpha": alpha,
        "alpha_cv": "leave-one-sample-out" if len(np.unique(sid)) >= 2 else "5 vertical strips of the one sample",
        "spots": len(x),
        "samples": sorted(set(map(str, sid))),
        "prototypes": int(filled.sum()),
        "encoder": model.config.encoder,
    }
    return ExpressionPredictor(
        genes=list(genes), weight=w, bias=b, keys=keys[filled], values=values, k=min(k, int(filled.sum())), info=info
    )


def fit_predictor_from_root(
    model,
    root: Path | str,
    features: Path | str,
    ids: list[str] | None = None,
    genes: list[str] | None = None,
    progress: bool = True,
    samples=None,
    **kwargs,
) -> ExpressionPredictor:
    """Fit the head on the samples ``ids`` of a HEST root (default: the model's training samples) and their
    feature files ``features/<id>.h5``; ``genes`` default to the model's gene panel. ``samples``: in-memory
    samples to take ``ids`` from instead of the root."""
    from ..encoders.features import read_features
    from ..io import read_hest
    from ..io.barcodes import match_barcodes

    ids = list(ids) if ids is not None else list(model.config.split.get("train", []))
    if not ids:
        msg = "the model records no training samples; pass the sample ids to fit the expression head on (--ids)"
        raise SpadeInputError(msg)
    genes = [canonical(g) for g in (genes or model.config.genes) if g != LIBRARY_SIZE]
    features = Path(features)
    missing = [i for i in ids if not (features / f"{i}.h5").is_file()]
    if missing:
        msg = f"no feature files for {missing[:3]} in {features}; point --features at FEATS/<encoder>"
        raise FileNotFoundError(msg)
    xs, ys, cs = [], [], []
    chosen = read_hest(root, ids=ids) if samples is None else [s for s in samples if s.id in set(ids)]
    for s in tqdm(chosen, desc="expression head: read", unit="sample", disable=not progress):
        fs = read_features(features / f"{s.id}.h5")
        pos = match_barcodes(fs.barcode, s.adata.obs_names, f"feature file {features / f'{s.id}.h5'}")
        xs.append(np.asarray(fs.features, np.float32))
        ys.append(expression_target(s.adata, genes)[pos])
        cs.append(np.asarray(s.adata.obsm["spatial"], np.float64)[pos])
    head = fit_predictor(model, xs, ys, cs, ids, genes, **kwargs)
    if progress:
        print(
            f"expression head: {len(genes)} genes, ridge alpha {head.info['alpha']:g} "
            f"({head.info['alpha_cv']}), {head.info['prototypes']} prototypes from {head.info['spots']} spots",
            file=sys.stderr,
        )
    return head
