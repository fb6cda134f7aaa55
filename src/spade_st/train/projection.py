"""The fixed projection of ``residual``/``concat`` outputs: PCA of standardised training features, fitted in
two chunked passes over a row store (bounded memory at any number of spots), and the fixed rotation that keeps
its variance structure visible to probes which standardise each dimension."""

from __future__ import annotations

import numpy as np

_CHUNK = 65536


def fit_projection(features, rows: np.ndarray, out_dim: int, whiten: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), weight (D, out_dim)) such that ``(x - mean) @ weight`` are the first ``out_dim`` principal
    components of the standardised features ``features[rows]``.

    Scaled so the components have unit variance on average (comparable to the expert heads' LayerNorm outputs,
    and the variance structure a ridge probe leans on is kept), or each unit variance with ``whiten``. Component
    signs are fixed (largest loading positive), so the result is deterministic. Columns beyond the rank are 0
    (before any :func:`rotation`).
    """
    rows = np.asarray(rows, dtype=np.int64)
    n, dim = len(rows), int(features.shape[1])
    if n < 2:
        msg = f"the projection needs at least 2 training spots, got {n}"
        raise ValueError(msg)
    total, sq = np.zeros(dim), np.zeros(dim)
    for i in range(0, n, _CHUNK):
        x = np.asarray(features[rows[i : i + _CHUNK]], dtype=np.float64)
        total += x.sum(0)
        sq += (x**2).sum(0)
    mean = total / n
    std = np.sqrt(np.maximum(sq / n - mean**2, 0.0))
    std = np.where(std > 1e-8, std, 1.0)
    cov = np.zeros((dim, dim))
    for i in range(0, n, _CHUNK):
        z = (np.asarray(features[rows[i : i + _CHUNK]], dtype=np.float64) - mean) / std
        cov += z.T @ z
    cov /= n - 1
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][: min(out_dim, dim, n - 1)]
    vals, vecs = np.maximum(vals[order], 1e-12), vecs[:, order]
    vecs *= np.sign(vecs[np.abs(vecs).argmax(0), np.arange(vecs.shape[1])])
    return _scaled(mean, vecs / std[:, None], vals, out_dim, whiten)


def _scaled(mean, dirs: np.ndarray, var: np.ndarray, out_dim: int, whiten: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean, weight) as float32: the directions ``dirs`` (D, k), whose scores have variances ``var``, scaled to
    unit variance on average (each one with ``whiten``) and padded with zero columns to ``out_dim``."""
    scale = 1.0 / np.sqrt(var) if whiten else np.full(len(var), 1.0 / np.sqrt(var.mean()))
    weight = np.zeros((dirs.shape[0], out_dim))
    weight[:, : len(var)] = dirs * scale
    return mean.astype(np.float32), weight.astype(np.float32)


def fit_expression_projection(
    features, expression, rows: np.ndarray, groups, out_dim: int, whiten: bool = False, max_rows: int = 20000
) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), weight (D, out_dim)): the directions of the features that predict the panel expression.

    Reduced-rank ridge regression: a ridge from the features of ``rows`` to their expression (standardised
    inputs, intercept; α by leave-one-group-out CV over ``groups``, the rows' samples, or over 5 contiguous
    blocks of rows for one sample), then ``(x - mean) @ weight`` = the first ``out_dim`` principal components of
    the ridge's predicted expression, taken as a map of the features. An image-space projection shaped by
    expression, fixed before the experts train. At most ``max_rows`` rows are used (an even, deterministic
    subsample). Scaled like :func:`fit_projection`; columns beyond the rank (the number of genes) are 0 (before any
    :func:`rotation`).
    """
    from ..genes.ridge import choose_alpha, ridge_weights

    rows = np.asarray(rows, dtype=np.int64)
    groups = np.asarray(groups)
    if len(rows) > max_rows:
        keep = np.linspace(0, len(rows) - 1, max_rows).round().astype(np.int64)
        rows, groups = rows[keep], groups[keep]
    if len(rows) < 10:
        msg = f"the expression projection needs at least 10 training spots, got {len(rows)}"
        raise ValueError(msg)
    x = np.asarray(features[rows], dtype=np.float64)
    y = np.asarray(expression[rows], dtype=np.float64)
    if len(np.unique(groups)) < 2:
        groups = np.minimum(np.arange(len(rows)) * 5 // len(rows), 4)
    w, _ = ridge_weights(x, y, choose_alpha(x, y, groups))
    mean = x.mean(0)
    fitted = (x - mean) @ w
    _, s, vt = np.linalg.svd(fitted - fitted.mean(0), full_matrices=False)
    k = min(out_dim, int((s > s[0] * 1e-8).sum()) if len(s) else 0)
    dirs = w @ vt[:k].T  # (D, k): feature -> score on each principal axis of the predicted expression
    dirs *= np.sign(dirs[np.abs(dirs).argmax(0), np.arange(k)])
    var = np.maximum((s[:k] ** 2) / (len(rows) - 1), 1e-12)
    return _scaled(mean, dirs, var, out_dim, whiten)


def rotation(dim: int, seed: int = 0) -> np.ndarray:
    """A fixed random orthogonal matrix (dim, dim), float64: the Q of a QR decomposition of a standard normal
    matrix drawn from numpy's legacy ``RandomState(seed)`` (a stream numpy keeps fixed across versions), with
    the signs that make it Haar-distributed.

    ``weight @ rotation(out_dim)`` spreads every principal component over all output dimensions, so each
    dimension carries about the components' mean variance. A probe that standardises each input dimension
    (``StandardScaler``, as the ridge and logistic probes here and most scikit-learn pipelines do) then keeps
    the components' variance structure instead of whitening it. On whitened components a ridge penalty shrinks
    every direction alike, so the predictions only move toward their mean by one factor and a ridge whose alpha
    is chosen by Pearson r barely regularises; after the rotation it shrinks the weak components more, as it
    does on the raw features.
    """
    if dim < 1:
        msg = f"rotation needs dim >= 1, got {dim}"
        raise ValueError(msg)
    q, r = np.linalg.qr(np.random.RandomState(seed).standard_normal((dim, dim)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)
