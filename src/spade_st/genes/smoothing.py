"""Spatial smoothing of spot expression over array neighbours (noisy ST spots; peers average 3 x 3)."""

from __future__ import annotations

import numpy as np


def spot_pitch(coords: np.ndarray) -> float:
    """Centre-to-centre spot distance: the median distance of each spot to its nearest other spot."""
    from scipy.spatial import cKDTree

    coords = np.asarray(coords, dtype=np.float64)
    if len(coords) < 2:
        return 1.0
    d, _ = cKDTree(coords).query(coords, k=2)
    pitch = float(np.median(d[:, 1]))
    return pitch if pitch > 0 else 1.0


def smooth_spatial(x: np.ndarray, coords: np.ndarray, radius: float = 1.5) -> np.ndarray:
    """Each row of ``x`` (spots x genes) averaged with the spots within ``radius`` spot pitches of it (itself
    included). ``radius`` 1.5 is the 3 x 3 neighbourhood on a square grid (legacy ST), the ring of 6 on Visium's
    hexagonal grid; 0 returns ``x`` unchanged."""
    import scipy.sparse as sp
    from scipy.spatial import cKDTree

    x = np.asarray(x)
    coords = np.asarray(coords, dtype=np.float64)
    if len(x) != len(coords):
        msg = f"{len(x)} expression rows but {len(coords)} spot coordinates"
        raise ValueError(msg)
    if radius <= 0 or len(x) < 2:
        return x
    pairs = cKDTree(coords).query_pairs(radius * spot_pitch(coords), output_type="ndarray")
    n = len(x)
    i = np.concatenate([pairs[:, 0], pairs[:, 1], np.arange(n)])
    j = np.concatenate([pairs[:, 1], pairs[:, 0], np.arange(n)])
    adj = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    deg = np.asarray(adj.sum(1)).ravel()
    return (sp.diags(1.0 / deg) @ adj @ x).astype(x.dtype, copy=False)
