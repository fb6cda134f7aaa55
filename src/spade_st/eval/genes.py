"""Gene-expression prediction from embeddings: the HEST-Benchmark ridge protocol and SPADE's kNN route."""

from __future__ import annotations

import numpy as np
import pandas as pd


def top_variable_genes(expr: list[pd.DataFrame], n: int = 50) -> list[str]:
    """The ``n`` genes of highest variance of log1p CP10k over the training samples (genes in all of them)."""
    common = sorted(set.intersection(*(set(e.columns) for e in expr)))
    return list(pd.concat([e[common] for e in expr]).var().sort_values(ascending=False, kind="stable").index[:n])


def log1p_cp10k(adata) -> pd.DataFrame:
    """log1p of counts per 10k over all of the sample's genes, as a DataFrame (spots x genes)."""
    import scipy.sparse as sp

    x = sp.csr_matrix(adata.X, dtype=np.float64)
    lib = np.asarray(x.sum(1)).ravel()
    x = sp.diags(np.where(lib > 0, 1e4 / np.maximum(lib, 1e-12), 0)) @ x
    return pd.DataFrame(np.log1p(x.toarray()), index=adata.obs_names, columns=adata.var_names)


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


def knn_expression(query: np.ndarray, keys: np.ndarray, y_keys: np.ndarray, k: int = 50) -> np.ndarray:
    """BLEEP-style prediction: mean expression of the ``k`` training spots whose (gene) embeddings have the
    highest dot product with each query image embedding."""
    k = min(k, len(keys))
    sim = query @ keys.T
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    return y_keys[top].mean(1)
