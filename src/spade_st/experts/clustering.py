"""Two-stage clustering of image features into experts (the SPADE paper, arXiv 2506.21857).

Stage 1: k-means per group (organ by default, ``k1`` each) on the raw features. Stage 2: k-means of all
stage-1 centroids into ``n_experts``. Expert e owns the spots of the stage-1 clusters whose centroids fall in
stage-2 cluster e, so its batches mix organs (hard negatives across organs).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._validation import SpadeInputError
from .kmeans import kmeans, nearest

_CHUNK = 65536


def _as_rows(X):
    """Arrays and row stores (anything with ``shape`` and integer-array indexing) as they are; lists as arrays."""
    return X if hasattr(X, "shape") and hasattr(X, "__getitem__") else np.asarray(X, dtype=np.float32)


def _shape(X) -> tuple[int, int]:
    shape = tuple(X.shape)
    if len(shape) != 2:
        msg = f"clustering needs features of shape (N, D), got shape {shape}"
        raise SpadeInputError(msg)
    return int(shape[0]), int(shape[1])


def _read_rows(X, rows: np.ndarray) -> np.ndarray:
    """Rows of an array or row store as float32, refused when not finite."""
    x = np.asarray(X[rows], dtype=np.float32)
    if not np.isfinite(x).all():
        msg = "features contain NaN or Inf; re-extract them (spade-st extract --overwrite)"
        raise SpadeInputError(msg)
    return x


def _nearest_rows(X, rows: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid of each of ``rows``, read chunk by chunk."""
    out = np.empty(len(rows), np.int64)
    for i in range(0, len(rows), _CHUNK):
        out[i : i + _CHUNK] = nearest(_read_rows(X, rows[i : i + _CHUNK]), centroids)[0]
    return out


class TwoStageClustering:
    """Two-stage k-means (estimator API).

    Parameters
    ----------
    k1
        Stage-1 clusters per group (SPADE: 16).
    n_experts
        Stage-2 clusters = experts (SPADE: 16).
    small_group
        A group with fewer distinct points than ``k1``: ``"shrink"`` (use k = number of distinct points,
        recorded in ``group_k_``) or ``"error"``.
    empty_expert
        An expert whose centroids own no training spot: ``"error"`` or ``"drop"`` (its centroids are removed,
        experts renumbered).
    backend, seed, niter, nredo, max_points_per_centroid
        stage-1 k-means settings (faiss by default, as the released code; scikit-learn fallback).
    stage2_n_init
        restarts of the stage-2 scikit-learn KMeans (the released code used sklearn's default, pinned here).
    min_expert_spots
        Fewest training spots an expert may own (None or 0: no rule, as the paper). When ``n_experts`` experts
        cannot all have that many, fewer experts are made: at most ``N // min_expert_spots``, then one fewer
        until every expert has enough (``sizing_`` says what was done). At HEST scale the rule does not bind.

    Attributes
    ----------
    centroids_ : (K, D) stage-1 centroids, grouped in ``groups_`` order
    centroid_group_ : (K,) group of each centroid
    centroid_expert_ : (K,) expert of each centroid
    labels_ : (N,) stage-1 cluster of each training point
    experts_ : (N,) expert of each training point
    """

    def __init__(
        self,
        k1: int = 16,
        n_experts: int = 16,
        small_group: str = "shrink",
        empty_expert: str = "error",
        backend: str = "auto",
        seed: int = 0,
        niter: int = 50,
        nredo: int = 5,
        max_points_per_centroid: int = 50000,
        stage2_n_init: int = 10,
        min_expert_spots: int | None = None,
        progress: bool = False,
    ):
        self.k1 = k1
        self.n_experts = n_experts
        self.small_group = small_group
        self.empty_expert = empty_expert
        self.backend = backend
        self.seed = seed
        self.niter = niter
        self.nredo = nredo
        self.max_points_per_centroid = max_points_per_centroid
        self.stage2_n_init = stage2_n_init
        self.min_expert_spots = min_expert_spots
        self.progress = progress

    def _km(self, x, k, seed):
        return kmeans(
            x,
            k,
            seed=seed,
            niter=self.niter,
            nredo=self.nredo,
            max_points_per_centroid=self.max_points_per_centroid,
            backend=self.backend,
        )

    def fit(self, X, groups=None) -> TwoStageClustering:
        """Fit on features ``X`` (N, D) with a group label per row (default: one group).

        ``X`` may be an array or any row-indexable store (a :class:`~spade_st.train.store.RowFile`, a memory
        map): it is read group by group and in chunks, never whole, so millions of spots cluster in bounded
        memory. A group larger than ``max_points_per_centroid * k`` fits its k-means on a seeded subsample of
        that size (faiss would subsample the same amount itself); every point is then labelled.
        """
        X = _as_rows(X)
        n, dim = _shape(X)
        if n == 0 or dim == 0:
            msg = f"clustering needs features of shape (N, D) with N > 0, got {(n, dim)}"
            raise SpadeInputError(msg)
        if self.small_group not in ("shrink", "error") or self.empty_expert not in ("error", "drop"):
            msg = "small_group must be 'shrink'|'error' and empty_expert 'error'|'drop'"
            raise ValueError(msg)
        groups = np.asarray(["all"] * n if groups is None else groups, dtype=object).astype(str)
        if len(groups) != n:
            msg = f"{len(groups)} group labels for {n} feature rows"
            raise ValueError(msg)
        self.groups_ = sorted(set(groups))
        group_rows = [np.flatnonzero(groups == g) for g in self.groups_]
        cents, cgroup, self.group_k_ = [], [], {}
        from .._progress import progress

        groups_bar = progress(
            list(zip(self.groups_, group_rows, strict=True)),
            desc="clustering: stage 1",
            unit="group",
            disable=not self.progress,
        )
        for gi, (g, rows) in enumerate(groups_bar):
            groups_bar.set_postfix_str(f"{g}: {len(rows)} spots")
            k = self.k1
            if len(rows) <= 4 * self.k1:
                n_distinct = len(np.unique(_read_rows(X, rows), axis=0))
                if n_distinct < self.k1:
                    if self.small_group == "error":
                        msg = (
                            f"group {g!r} has {n_distinct} distinct spots, fewer than k1={self.k1}; lower --k1 or "
                            "set small_group='shrink'"
                        )
                        raise SpadeInputError(msg)
                    k = max(1, n_distinct)
            self.group_k_[g] = k
            cap = self.max_points_per_centroid * k
            fit_rows = rows
            if len(rows) > cap:
                fit_rows = np.sort(np.random.default_rng([self.seed, gi]).choice(rows, cap, replace=False))
            cents.append(self._km(_read_rows(X, fit_rows), k, self.seed + gi))
            cgroup += [g] * k
        C = np.concatenate(cents)
        if len(C) < self.n_experts:
            msg = f"{len(C)} stage-1 centroids cannot form {self.n_experts} experts; lower --experts or raise --k1"
            raise SpadeInputError(msg)
        # stage 1 labels: nearest centroid WITHIN the point's own group
        labels = np.empty(n, np.int64)
        offset = 0
        for rows, c in zip(group_rows, cents, strict=True):
            labels[rows] = _nearest_rows(X, rows, c) + offset
            offset += len(c)
        # drop stage-1 centroids that own no point (k-means may leave some empty)
        owned = np.bincount(labels, minlength=len(C)) > 0
        remap = np.cumsum(owned) - 1
        C, cgroup, labels = C[owned], list(np.asarray(cgroup)[owned]), remap[labels]
        stage2, cexp, counts = self._stage2(C, labels, n)
        if (counts == 0).any():
            empty = np.flatnonzero(counts == 0).tolist()
            if self.empty_expert == "error":
                msg = f"expert(s) {empty} own no training spot; lower --experts or set empty_expert='drop'"
                raise SpadeInputError(msg)
            keep = counts > 0
            cexp = (np.cumsum(keep) - 1)[cexp]
            stage2 = stage2[keep]
        self.centroids_ = C
        self.centroid_group_ = np.asarray(cgroup, dtype=object)
        self.centroid_expert_ = cexp.astype(np.int64)
        self.stage2_centroids_ = stage2
        self.labels_ = labels
        self.experts_ = self.centroid_expert_[labels]
        self.n_experts_ = int(self.centroid_expert_.max()) + 1
        return self

    def _stage2(self, C: np.ndarray, labels: np.ndarray, n: int):
        """Stage 2 as the released code (scikit-learn KMeans on the centroids, n_init pinned: its default moved),
        with fewer experts where ``min_expert_spots`` requires. Returns (stage-2 centroids, centroid -> expert,
        spots per expert)."""
        from sklearn.cluster import KMeans

        def fit(k):
            centres = KMeans(n_clusters=k, n_init=self.stage2_n_init, random_state=self.seed).fit(C)
            centres = centres.cluster_centers_.astype(np.float32)
            cexp = nearest(C, centres)[0]
            return centres, cexp, np.bincount(cexp[labels], minlength=k)

        m = int(self.min_expert_spots or 0)
        k = self.n_experts if m <= 0 else max(1, min(self.n_experts, n // m))
        out = fit(k)
        while m > 0 and k > 1 and out[2].min() < m:
            k -= 1
            out = fit(k)
        self.sizing_ = (
            f"{self.n_experts} experts requested, {k} made: {n} training spots, at least {m} per expert "
            f"(smallest expert: {int(out[2].min())} spots)"
            if k != self.n_experts
            else ""
        )
        return out

    def _check(self):
        if not hasattr(self, "centroids_"):
            msg = "this TwoStageClustering is not fitted yet: call fit(X, groups) first"
            raise RuntimeError(msg)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Expert of each row: the expert of its nearest stage-1 centroid (over all groups)."""
        self._check()
        X = _as_rows(X)
        n, dim = _shape(X)
        if dim != self.centroids_.shape[1]:
            msg = f"features have shape {(n, dim)}, the clustering was fitted on dimension {self.centroids_.shape[1]}"
            raise SpadeInputError(msg)
        return self.centroid_expert_[_nearest_rows(X, np.arange(n), self.centroids_)]

    def qc_table(self, groups=None) -> pd.DataFrame:
        """Per expert: training spots, stage-1 centroids, groups (organs) covered, largest group share."""
        self._check()
        rows = []
        g = np.asarray(groups, dtype=object) if groups is not None else None
        for e in range(self.n_experts_):
            m = self.experts_ == e
            row = {
                "expert": e,
                "spots": int(m.sum()),
                "centroids": int((self.centroid_expert_ == e).sum()),
                "groups": len(set(self.centroid_group_[self.centroid_expert_ == e])),
            }
            if g is not None and m.any():
                vc = pd.Series(g[m]).value_counts()
                row["largest_group"] = str(vc.index[0])
                row["largest_group_share"] = float(vc.iloc[0] / m.sum())
            rows.append(row)
        return pd.DataFrame(rows)


def seed_agreement(X, groups, seeds=(0, 1, 2), **kwargs) -> pd.DataFrame:
    """Adjusted Rand index of the expert assignment between fits with different seeds."""
    from sklearn.metrics import adjusted_rand_score

    fits = {s: TwoStageClustering(seed=s, **kwargs).fit(X, groups).experts_ for s in seeds}
    rows = [
        {"seed_a": a, "seed_b": b, "ari": adjusted_rand_score(fits[a], fits[b])}
        for i, a in enumerate(seeds)
        for b in seeds[i + 1 :]
    ]
    return pd.DataFrame(rows)


def choose_k(X, ks=(4, 8, 16, 32, 64), seed=0, backend="auto", sample=20000) -> pd.DataFrame:
    """WCSS (standardised, for the elbow) and silhouette for each k, on a seeded subsample."""
    from sklearn.metrics import silhouette_score

    X = np.asarray(X, dtype=np.float32)
    rng = np.random.default_rng(seed)
    if len(X) > sample:
        X = X[rng.choice(len(X), sample, replace=False)]
    rows = []
    for k in ks:
        if k >= len(X):
            continue
        c = kmeans(X, k, seed=seed, backend=backend)
        lab, d = nearest(X, c)
        sil = (
            silhouette_score(X, lab, sample_size=min(len(X), 5000), random_state=seed) if len(set(lab)) > 1 else np.nan
        )
        rows.append({"k": k, "wcss": float(d.sum()), "silhouette": float(sil)})
    df = pd.DataFrame(rows)
    if len(df):
        df["wcss_std"] = (df["wcss"] - df["wcss"].mean()) / (df["wcss"].std() or 1.0)
    return df
