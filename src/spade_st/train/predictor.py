"""Fitting the model's expression head (:class:`~spade_st.experts.predictor.ExpressionPredictor`) on training spots.

Run at the end of pretraining and by ``spade-st fit-predictor`` (a model without a head, or a head for other
genes). The rows are the training samples' spots (without pretraining's validation blocks), paired with their
features by barcode; at most ``max_spots`` of them, split evenly over the samples and chosen before any
expression is computed, so the fit's memory and time do not grow with the cohort.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .._progress import progress as tqdm
from .._validation import SpadeInputError
from ..experts.predictor import ExpressionPredictor
from ..genes import LIBRARY_SIZE, canonical, expression_target
from ..genes.ridge import ridge_weights, search_alpha
from ..genes.symbols import check_one_id_kind, unique_names


def _cv_groups(samples: np.ndarray, coords: np.ndarray, n_strips: int = 5, max_groups: int = 10) -> np.ndarray:
    """Samples when there are two or more (at most ``max_groups`` folds of whole samples, so a 300-sample cohort
    costs 10 fits, not 300), else vertical strips of the one sample (spatially disjoint)."""
    uniq = np.unique(samples)
    if len(uniq) > max_groups:
        fold = {s: i % max_groups for i, s in enumerate(np.random.default_rng(0).permutation(uniq))}
        return np.array([fold[s] for s in samples])
    if len(uniq) >= 2:
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
    model_sha256: str = "",
) -> ExpressionPredictor:
    """Fit both methods on the rows of every sample (``features[i]``, ``targets[i]``, ``coords[i]``).

    ``model_sha256``: the model file's hash, recorded so that a head is never used with another model.
    """
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
    found = search_alpha(z, y, groups, criterion="mse")  # calibrated values: the maps show them
    alpha = found.alpha
    w, b = ridge_weights(z, y, alpha)
    p = int(min(n_prototypes, max(1, len(zl) // 5)))
    keys = kmeans(zl, p, seed=seed, niter=25, nredo=1, backend="sklearn" if len(zl) < 5000 else "auto")
    owner = nearest(zl, keys)[0]
    filled = np.bincount(owner, minlength=p) > 0
    values = np.stack([y[owner == j].mean(0) for j in np.flatnonzero(filled)])
    info = {
        "alpha": alpha,
        "alpha_cv": "leave-samples-out CV" if len(np.unique(sid)) >= 2 else "5 vertical strips of the one sample",
        "alpha_criterion": "held-out mean squared error",
        "alpha_grid": [float(found.alphas[0]), float(found.alphas[-1])],
        "alpha_widened": found.widened,
        "alpha_at_edge": bool(found.at_edge),
        "spots": len(x),
        "samples": sorted(set(map(str, sid))),
        "prototypes": int(filled.sum()),
        "encoder": model.config.encoder,
        "model_sha256": model_sha256,
    }
    cv_r = [None if not np.isfinite(v) else round(float(v), 6) for v in found.gene_r]
    return ExpressionPredictor(
        genes=list(genes),
        weight=w,
        bias=b,
        keys=keys[filled],
        values=values,
        k=min(k, int(filled.sum())),
        info=info,
        cv_r=cv_r,
    )


def describe_head(head: ExpressionPredictor) -> str:
    """One line on how a head was fitted and how well it predicts (its cross-validated per-gene r)."""
    from ..experts.predictor import PREDICTED_R

    i = head.info
    r = head.gene_r()
    ok = r[np.isfinite(r)]
    edge = ""
    if i.get("alpha_at_edge"):
        lo, hi = i.get("alpha_grid", [np.nan, np.nan])
        edge = f", at the edge of the widened grid {lo:g}-{hi:g} (the embedding predicts these genes little)"
    elif i.get("alpha_widened"):
        edge = f", grid widened {i['alpha_widened']}"
    quality = (
        f"; CV r median {np.median(ok):.3f}, {int((ok >= PREDICTED_R).sum())}/{len(r)} genes >= {PREDICTED_R}"
        if len(ok)
        else "; no gene varies in the held-out samples"
    )
    return (
        f"expression head: {len(head.genes)} genes, ridge alpha {i['alpha']:g} ({i['alpha_cv']}{edge}), "
        f"{i['prototypes']} prototypes from {i['spots']} spots{quality}"
    )


def fit_predictor_from_root(
    model,
    root: Path | str,
    features: Path | str,
    ids: list[str] | None = None,
    genes: list[str] | None = None,
    progress: bool = True,
    samples=None,
    exclude: dict | None = None,
    max_spots: int = 50_000,
    seed: int = 0,
    **kwargs,
) -> ExpressionPredictor:
    """Fit the head on the samples ``ids`` of a HEST root and their feature files ``features/<id>.h5``.

    Parameters
    ----------
    ids
        Samples to fit on (default: the model's training samples).
    genes
        Genes of the head (default: the model's gene panel); a gene absent from every sample is refused.
    samples
        In-memory samples to take ``ids`` from instead of the root.
    exclude
        ``{sample: barcodes}`` left out (the spatially blocked validation spots of pretraining).
    max_spots
        At most ``ceil(max_spots / len(ids))`` spots per sample (seeded) are read and fitted, so the cost does not
        grow with the cohort.
    """
    import zlib

    from ..io import read_hest
    from ..io.barcodes import match_barcodes
    from ..io.features import read_features

    ids = list(ids) if ids is not None else list(model.config.split.get("train", []))
    if not ids:
        msg = "the model records no training samples; pass the sample ids to fit the expression head on (--ids)"
        raise SpadeInputError(msg)
    genes = unique_names(str(g).strip() for g in (genes or model.config.genes) if g != LIBRARY_SIZE)
    check_one_id_kind(genes, "the expression head's genes")
    features = Path(features)
    missing = [i for i in ids if not (features / f"{i}.h5").is_file()]
    if missing:
        msg = f"no feature files for {missing[:3]} in {features}; point --features at FEATS/<encoder>"
        raise FileNotFoundError(msg)
    chosen = read_hest(root, ids=ids) if samples is None else [s for s in samples if s.id in set(ids)]
    spelled = {}  # each gene as the samples spell it (first seen), so `--genes erbb2` is stored as ERBB2
    for s in chosen:
        for v in s.adata.var_names:
            spelled.setdefault(canonical(v), str(v))
    absent = [g for g in genes if canonical(g) not in spelled]
    if absent:
        msg = f"gene(s) {absent[:5]} are in none of the samples {ids[:5]}; check the names (symbols, any case)"
        raise SpadeInputError(msg)
    genes = [spelled[canonical(g)] for g in genes]
    cap = -(-max_spots // len(chosen))
    xs, ys, cs = [], [], []
    for s in tqdm(chosen, desc="expression head: read", unit="sample", disable=not progress):
        fs = read_features(features / f"{s.id}.h5")
        pos = match_barcodes(fs.barcode, s.adata.obs_names, f"feature file {features / f'{s.id}.h5'}")
        keep = ~np.isin(np.asarray(fs.barcode).astype(str), list(map(str, (exclude or {}).get(s.id, []))))
        rows = np.flatnonzero(keep)
        if len(rows) > cap:  # seeded per sample: the same rows whatever the other samples are
            rows = np.sort(np.random.default_rng([seed, zlib.crc32(s.id.encode())]).choice(rows, cap, replace=False))
        xs.append(np.asarray(fs.features, np.float32)[rows])
        ys.append(expression_target(s.adata[pos[rows]], genes))
        cs.append(np.asarray(s.adata.obsm["spatial"], np.float64)[pos[rows]])
    head = fit_predictor(model, xs, ys, cs, [s.id for s in chosen], genes, max_spots=max_spots, seed=seed, **kwargs)
    head.info["organs"] = sorted({o for s in chosen if isinstance(o := s.meta.get("organ"), str) and o.strip()})
    if progress:
        print(describe_head(head), file=sys.stderr)
    return head
