"""Seeded k-means with faiss (as the released code) and a scikit-learn fallback."""

from __future__ import annotations

import numpy as np


def have_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def kmeans(
    x: np.ndarray,
    k: int,
    seed: int = 0,
    niter: int = 50,
    nredo: int = 5,
    max_points_per_centroid: int = 50000,
    backend: str = "auto",
) -> np.ndarray:
    """Centroids (k, D) float32 of ``x`` (N, D). ``backend``: "faiss", "sklearn" or "auto" (faiss if installed)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if backend == "auto":
        backend = "faiss" if have_faiss() else "sklearn"
    if backend == "faiss":
        from .._optional import require

        faiss = require("faiss", "faiss-cpu", "faiss")

        km = faiss.Kmeans(
            x.shape[1],
            k,
            niter=niter,
            nredo=nredo,
            seed=int(seed),
            verbose=False,
            max_points_per_centroid=max_points_per_centroid,
            min_points_per_centroid=1,
        )
        km.train(x)
        return np.asarray(km.centroids, dtype=np.float32).copy()
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=k, n_init=nredo, max_iter=niter, random_state=seed)
        return km.fit(x).cluster_centers_.astype(np.float32)
    msg = f"unknown k-means backend {backend!r}: use 'faiss', 'sklearn' or 'auto'"
    raise ValueError(msg)


def nearest(x: np.ndarray, centroids: np.ndarray, batch: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Index of and squared distance to the nearest centroid, in batches (bounded memory)."""
    x = np.asarray(x, dtype=np.float32)
    c = np.asarray(centroids, dtype=np.float32)
    cn = (c**2).sum(1)
    idx = np.empty(len(x), np.int64)
    dist = np.empty(len(x), np.float32)
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        d = (xb**2).sum(1, keepdims=True) - 2 * xb @ c.T + cn[None]
        idx[i : i + batch] = d.argmin(1)
        dist[i : i + batch] = np.maximum(d[np.arange(len(xb)), idx[i : i + batch]], 0)
    return idx, dist
