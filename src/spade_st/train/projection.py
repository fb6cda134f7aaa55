"""The fixed projection of ``residual``/``concat`` outputs: PCA of standardised training features, fitted in
two chunked passes over a row store (bounded memory at any number of spots)."""

from __future__ import annotations

import numpy as np

_CHUNK = 65536


def fit_projection(features, rows: np.ndarray, out_dim: int, whiten: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), weight (D, out_dim)) such that ``(x - mean) @ weight`` are the first ``out_dim`` principal
    components of the standardised features ``features[rows]``.

    Scaled so the components have unit variance on average (comparable to the expert heads' LayerNorm outputs,
    and the variance structure a ridge probe leans on is kept), or each unit variance with ``whiten``. Component
    signs are fixed (largest loading positive), so the result is deterministic. Columns beyond the rank are 0.
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
    scale = 1.0 / np.sqrt(vals) if whiten else np.full(len(vals), 1.0 / np.sqrt(vals.mean()))
    weight = np.zeros((dim, out_dim))
    weight[:, : len(vals)] = vecs / std[:, None] * scale
    return mean.astype(np.float32), weight.astype(np.float32)
