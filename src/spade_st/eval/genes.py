"""Gene-expression prediction from embeddings: targets, the HEST-Benchmark ridge, a cross-validated ridge and
SPADE's kNN route; rows matched by barcode.

Targets (``TARGETS``): ``log1p`` = log1p of the raw counts (HEST-Benchmark's target: its ``normalize_adata``
applies log1p only, so sequencing depth stays in the target); ``cp10k`` = log1p of counts per 10k (depth
removed). Both are legitimate questions; every table says which one it answers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._validation import SpadeInputError
from ._names import PROBES, TARGETS

#: ridge penalties searched by :func:`ridge_cv` (standardised inputs, so the scale is comparable across sources)
ALPHAS = np.logspace(-2, 6, 17)


def _counts_csr(adata):
    import scipy.sparse as sp

    return sp.csr_matrix(adata.X, dtype=np.float64)


def log1p_cp10k(adata) -> pd.DataFrame:
    """log1p of counts per 10k over all of the sample's genes, as a DataFrame (spots x genes)."""
    import scipy.sparse as sp

    x = _counts_csr(adata)
    lib = np.asarray(x.sum(1)).ravel()
    x = sp.diags(np.where(lib > 0, 1e4 / np.maximum(lib, 1e-12), 0)) @ x
    return pd.DataFrame(np.log1p(x.toarray()), index=adata.obs_names, columns=adata.var_names)


def gene_target(adata, target: str = "log1p") -> pd.DataFrame:
    """The regression target of one sample (spots x genes): ``log1p`` raw counts or ``cp10k`` (see module doc)."""
    if target == "cp10k":
        return log1p_cp10k(adata)
    if target == "log1p":
        return pd.DataFrame(np.log1p(_counts_csr(adata).toarray()), index=adata.obs_names, columns=adata.var_names)
    msg = f"unknown gene target {target!r}; choose from {TARGETS}"
    raise SpadeInputError(msg)


def top_variable_genes(expr: list[pd.DataFrame], n: int = 50) -> list[str]:
    """The ``n`` genes of highest variance over the training samples' rows (genes present in all of them)."""
    common = sorted(set.intersection(*(set(e.columns) for e in expr)))
    return list(pd.concat([e[common] for e in expr]).var().sort_values(ascending=False, kind="stable").index[:n])


def match_barcodes(rows, reference, what: str, among: str = "spots of the sample") -> np.ndarray:
    """Positions in ``reference`` of each barcode in ``rows`` (e.g. a feature file's rows among a sample's spots).

    Refuses missing barcodes (``rows`` None), duplicated barcodes on either side and barcodes of ``rows`` that
    are not in ``reference``: rows are never matched by position.
    """
    if rows is None:
        msg = f"{what} has no barcodes; rows cannot be matched to spots. Re-extract it with `spade-st extract`"
        raise SpadeInputError(msg)
    rows = pd.Index(np.asarray(rows).astype(str))
    ref = pd.Index(np.asarray(reference).astype(str))
    for idx, side in ((rows, what), (ref, f"the reference of {what}")):
        if idx.has_duplicates:
            dup = idx[idx.duplicated()][0]
            msg = f"{side} has duplicated barcodes (e.g. {dup!r}); each spot must appear once"
            raise SpadeInputError(msg)
    pos = ref.get_indexer(rows)
    if (pos < 0).any():
        miss = rows[pos < 0]
        msg = (
            f"{what}: {len(miss)} of {len(rows)} barcodes are not {among} (e.g. {miss[0]!r}); "
            "the file belongs to another sample or an older run: re-create it"
        )
        raise SpadeInputError(msg)
    return pos


def mean_pearson(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over genes of :func:`pearson_per_gene`, skipping constant genes; NaN if every gene is constant."""
    r = pearson_per_gene(pred, truth)
    r = r[np.isfinite(r)]
    return float(r.mean()) if len(r) else float("nan")


def pearson_per_gene(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Pearson r per column; NaN where either side is constant."""
    p = pred - pred.mean(0)
    t = truth - truth.mean(0)
    den = np.sqrt((p**2).sum(0) * (t**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (p * t).sum(0) / den, np.nan)


def hest_ridge(x_train, y_train, x_test, n_pca: int = 256, seed: int = 0) -> np.ndarray:
    """HEST-Benchmark regression: StandardScaler -> PCA(256) -> Ridge(alpha = 100 / (d * G), no intercept)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(x_train)
    xt, xv = sc.transform(x_train), sc.transform(x_test)
    k = min(n_pca, xt.shape[0], xt.shape[1])
    pca = PCA(n_components=k, random_state=seed).fit(xt)
    xt, xv = pca.transform(xt), pca.transform(xv)
    alpha = 100.0 / (xt.shape[1] * y_train.shape[1])
    model = Ridge(alpha=alpha, fit_intercept=False, solver="lsqr", max_iter=1000, random_state=seed)
    return model.fit(xt, y_train).predict(xv)


def _ridge_path(x_train, y_train, x_test, alphas) -> np.ndarray:
    """Predictions (len(alphas), n_test, G) of standardised ridge regressions with intercept, one SVD for all."""
    mu, sd = x_train.mean(0), x_train.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    xt, xv = (x_train - mu) / sd, (x_test - mu) / sd
    ym = y_train.mean(0)
    u, s, vt = np.linalg.svd(xt, full_matrices=False)
    uty = u.T @ (y_train - ym)
    proj = xv @ vt.T
    return np.stack([proj @ ((s / (s**2 + a))[:, None] * uty) + ym for a in alphas])


def ridge_cv(x_train, y_train, x_test, groups, alphas=ALPHAS) -> tuple[np.ndarray, float]:
    """Ridge (standardised inputs, intercept, no PCA) whose alpha maximises the mean per-gene Pearson r over
    leave-one-group-out folds of the training rows (``groups``: sections, or spatial blocks of one section).

    The test rows take no part in choosing alpha. Returns (predictions, chosen alpha).
    """
    x_train, y_train = np.asarray(x_train, np.float64), np.asarray(y_train, np.float64)
    groups = np.asarray(groups)
    uniq = np.unique(groups)
    if len(uniq) < 2:
        msg = "ridge_cv needs at least two groups of training rows (sections or spatial blocks) to choose alpha"
        raise SpadeInputError(msg)
    score = np.zeros(len(alphas))
    for g in uniq:
        te = groups == g
        preds = _ridge_path(x_train[~te], y_train[~te], x_train[te], alphas)
        score += [np.nan_to_num(mean_pearson(p, y_train[te]), nan=0.0) for p in preds]  # all-constant: no vote
    best = float(alphas[int(np.argmax(score))])
    return _ridge_path(x_train, y_train, np.asarray(x_test, np.float64), [best])[0], best


def knn_expression(query: np.ndarray, keys: np.ndarray, y_keys: np.ndarray, k: int = 50) -> np.ndarray:
    """BLEEP-style prediction: mean expression of the ``k`` training spots whose (gene) embeddings have the
    highest dot product with each query image embedding."""
    k = min(k, len(keys))
    sim = query @ keys.T
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    return y_keys[top].mean(1)


def predict_genes(probe: str, x_train, y_train, x_test, groups) -> np.ndarray:
    """Predictions of one of :data:`PROBES` (``groups``: the training rows' CV groups, used by ``ridge_cv``)."""
    if probe == "hest_ridge":
        return hest_ridge(x_train, y_train, x_test)
    if probe == "ridge_cv":
        return ridge_cv(x_train, y_train, x_test, groups)[0]
    msg = f"unknown gene probe {probe!r}; choose from {PROBES}"
    raise SpadeInputError(msg)
