"""Are the experts separate islands? Two numbers on an embedding and each spot's expert.

- ``silhouette_by_expert``: silhouette of the embedding with the experts as clusters (Euclidean); near 1 when
  every expert's spots sit apart from the others', as when each expert's heads were trained alone.
- ``knn_same_expert``: share of each spot's 10 nearest neighbours (cosine) routed to its own expert.

Measured beside the raw features with the same expert labels (the experts are k-means clusters of the raw
features, so some separation is expected there too): an embedding well above raw has made islands.
"""

from __future__ import annotations

import numpy as np


def expert_islands(z: np.ndarray, experts: np.ndarray, k: int = 10, seed: int = 0) -> dict[str, float]:
    """``silhouette_by_expert`` and ``knn_same_expert`` of embedding ``z`` (N, d) for expert labels (N,)."""
    from sklearn.metrics import silhouette_score

    z, experts = np.asarray(z, np.float64), np.asarray(experts)
    if len(np.unique(experts)) < 2:
        return {"silhouette_by_expert": float("nan"), "knn_same_expert": float("nan")}
    sil = silhouette_score(z, experts, sample_size=min(len(z), 5000), random_state=seed)
    u = z / np.linalg.norm(z, axis=1, keepdims=True).clip(1e-12)
    sim = u @ u.T
    np.fill_diagonal(sim, -np.inf)
    k = min(k, len(z) - 1)
    nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    same = float((experts[nn] == experts[:, None]).mean())
    return {"silhouette_by_expert": float(sil), "knn_same_expert": same}
