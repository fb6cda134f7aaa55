"""UMAP of embeddings, coloured by expert, organ, sample or label."""

from __future__ import annotations

import numpy as np

from ._util import categorical_colors, finish, get_ax


def umap_coords(x: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """2-D UMAP (umap-learn) of ``x``; PCA to 50 dims first for speed."""
    import warnings

    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float32)
    if x.shape[1] > 50 and len(x) > 50:
        x = PCA(50, random_state=seed).fit_transform(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import umap

        return umap.UMAP(n_neighbors=min(n_neighbors, len(x) - 1), random_state=seed).fit_transform(x)


def umap(x: np.ndarray, color, title: str = "", ax=None, save=None, seed: int = 0, coords=None, s: float = 6):
    """Scatter of the UMAP of ``x`` coloured by the categorical ``color`` (legend outside)."""
    xy = coords if coords is not None else umap_coords(x, seed)
    fig, ax = get_ax(ax, (5.5, 5))
    color = np.asarray(color).astype(str)
    cats = sorted(set(color))
    for c, col in zip(cats, categorical_colors(len(cats)), strict=True):
        m = color == c
        ax.scatter(xy[m, 0], xy[m, 1], s=s, color=col, label=c, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), fontsize=7, markerscale=2, frameon=False)
    return finish(fig, save)
