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
from ..genes.ridge import ALPHAS, knn_expression, mean_pearson, pearson_per_gene, ridge_cv
from ..io.barcodes import match_barcodes
from ._names import PROBES, TARGETS

__all__ = [
    "ALPHAS",
    "gene_target",
    "hest_ridge",
    "knn_expression",
    "log1p_cp10k",
    "match_barcodes",
    "mean_pearson",
    "pearson_per_gene",
    "predict_genes",
    "ridge_cv",
    "top_variable_genes",
]


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


def hest_ridge(x_train, y_train, x_test, n_pca: int = 256, seed: int = 0, as_hest: bool = False) -> np.ndarray:
    """HEST-Benchmark regression: StandardScaler -> PCA(256) -> Ridge(alpha = 100 / (d * G), no intercept).

    PCA keeps ``min(n_pca, training rows, d)`` components (HEST's own code refuses fewer than 256).
    ``as_hest``: HEST's code path to the last digit (``spade-st bench hest``): the scaler and the PCA fitted with
    ``fit_transform`` on the training rows (its ``Pipeline``) and their output cast to float32 (its
    ``torch.Tensor``) before the ridge.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler()
    k = min(n_pca, np.shape(x_train)[0], np.shape(x_train)[1])
    pca = PCA(n_components=k, random_state=seed)
    if as_hest:
        xt = pca.fit_transform(sc.fit_transform(x_train)).astype(np.float32)
        xv = pca.transform(sc.transform(x_test)).astype(np.float32)
    else:
        sc.fit(x_train)
        xt, xv = sc.transform(x_train), sc.transform(x_test)
        pca.fit(xt)
        xt, xv = pca.transform(xt), pca.transform(xv)
    alpha = 100.0 / (xt.shape[1] * y_train.shape[1])
    model = Ridge(alpha=alpha, fit_intercept=False, solver="lsqr", max_iter=1000, random_state=seed)
    return model.fit(xt, y_train).predict(xv)


def predict_genes(probe: str, x_train, y_train, x_test, groups) -> np.ndarray:
    """Predictions of one of :data:`PROBES` (``groups``: the training rows' CV groups, used by ``ridge_cv``)."""
    if probe == "hest_ridge":
        return hest_ridge(x_train, y_train, x_test)
    if probe == "ridge_cv":
        return ridge_cv(x_train, y_train, x_test, groups)[0]
    msg = f"unknown gene probe {probe!r}; choose from {PROBES}"
    raise SpadeInputError(msg)
