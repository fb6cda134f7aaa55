"""UMAP of embeddings held in an AnnData, coloured by sample, expert, organ or label."""

from __future__ import annotations

import numpy as np

from .._validation import SpadeInputError
from ._util import categorical_colors, finish, get_ax


def umap_coords(x: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """2-D UMAP (umap-learn) of ``x``; PCA to 50 dims first for speed."""
    import warnings

    from sklearn.decomposition import PCA

    from .._optional import require

    x = np.asarray(x, dtype=np.float32)
    if x.shape[1] > 50 and len(x) > 50:
        x = PCA(50, random_state=seed).fit_transform(x)
    umap = require("umap", "umap-learn", "plot")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return umap.UMAP(n_neighbors=min(n_neighbors, len(x) - 1), random_state=seed).fit_transform(x)


def _labels(adata, color: str) -> np.ndarray:
    if color == "expert":
        if "spade_expert_weights" not in adata.obsm:
            msg = "color='expert' needs obsm['spade_expert_weights']; run spade_st.tl.embed(adata, model) first"
            raise SpadeInputError(msg)
        return np.array([f"expert {e}" for e in np.asarray(adata.obsm["spade_expert_weights"]).argmax(1)])
    if color not in adata.obs:
        msg = f"color={color!r} is not an obs column (has: {list(adata.obs.columns)}) nor 'expert'"
        raise SpadeInputError(msg)
    return np.asarray(adata.obs[color].astype(str))


def _basis(adata, basis: str) -> str:
    if basis not in adata.obsm and f"X_{basis}" in adata.obsm:  # "spade" for "X_spade", as scanpy
        basis = f"X_{basis}"
    if basis not in adata.obsm:
        msg = f"obsm has no {basis!r} (has: {sorted(adata.obsm)}); run spade_st.tl.embed first"
        raise SpadeInputError(msg)
    return basis


def umap_of(adata, basis: str = "X_spade", seed: int = 0) -> np.ndarray:
    """The 2-D UMAP of ``obsm[basis]``, cached in ``obsm['X_umap_<basis>']`` (see :func:`embedding`)."""
    basis = _basis(adata, basis)
    cache = "X_umap_" + basis.removeprefix("X_")
    x = np.asarray(adata.obsm[basis])
    stamp = f"{x.shape}:{float(np.asarray(x[:256], np.float64).sum()):.6g}:seed{seed}"  # which embedding it shows
    stamps = adata.uns.setdefault("spade_umap", {})
    if cache not in adata.obsm or stamps.get(cache) != stamp:
        adata.obsm[cache] = umap_coords(x, seed)
        stamps[cache] = stamp
    return np.asarray(adata.obsm[cache])


def island_note(adata, basis: str = "X_spade", raw: str | None = None, seed: int = 0) -> str:
    """One line saying what the expert silhouette is computed over, beside the silhouette of what is drawn.

    The silhouette by expert (:func:`spade_st.eval.islands.expert_islands`) of the full embedding (e.g. 64-d)
    can be near 0 while its 2-D UMAP shows separate islands: UMAP keeps neighbourhoods, not distances. Both
    numbers are given, each named by the space it is measured in; ``raw`` adds the raw features' number.

    Returns
    -------
    str
        e.g. ``"silhouette by expert: 0.03 in the 64-d embedding (raw features, 1280-d: 0.01), 0.61 in this 2-d
        UMAP"``.
    """
    from ..eval.islands import expert_islands

    basis = _basis(adata, basis)
    expert = _labels(adata, "expert")

    def sil(z):
        return expert_islands(np.asarray(z), expert, seed=seed)["silhouette_by_expert"]

    if len(np.unique(expert)) < 2:
        return "silhouette by expert: none (every spot has the same dominant expert)"
    x = np.asarray(adata.obsm[basis])
    note = f"silhouette by expert: {sil(x):.2f} in the {x.shape[1]}-d embedding"
    if raw is not None and raw in adata.obsm:
        r = np.asarray(adata.obsm[raw])
        note += f" (raw features, {r.shape[1]}-d: {sil(r):.2f})"
    return note + f", {sil(umap_of(adata, basis, seed)):.2f} in this 2-d UMAP"


def embedding(adata, basis: str = "X_spade", color: str = "sample", *, title=None, seed=0, s=6, ax=None, save=None):
    """Scatter of the UMAP of ``obsm[basis]`` coloured by a category.

    Parameters
    ----------
    adata
        Rows with ``obsm[basis]``.
    basis
        ``obsm`` key (``"spade"`` stands for ``"X_spade"``).
    color
        An ``obs`` column, or ``"expert"`` (the dominant expert of ``obsm['spade_expert_weights']``).
    title, seed, s, ax, save
        Title (default: basis and colour; for ``color="expert"`` a second line from :func:`island_note`: the
        silhouette by expert of the embedding itself and of the 2-D UMAP drawn), UMAP seed, marker size, an
        existing Axes, a file to write.

    Returns
    -------
    matplotlib.axes.Axes

    The 2-D coordinates are cached in ``obsm['X_umap_<basis>']`` and reused while the embedding and ``seed`` are
    unchanged (a fingerprint in ``uns['spade_umap']``).
    """
    basis = _basis(adata, basis)
    xy = umap_of(adata, basis, seed)
    labels = _labels(adata, color)
    if title is None:
        title = f"{basis} by {color}" + (f"\n{island_note(adata, basis, seed=seed)}" if color == "expert" else "")
    fig, ax = get_ax(ax, (5.5, 5))
    cats = sorted(set(labels))
    for c, col in zip(cats, categorical_colors(len(cats)), strict=True):
        m = labels == c
        ax.scatter(xy[m, 0], xy[m, 1], s=s, color=col, label=c, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(title, fontsize=9 if "\n" in title else None)  # a title and a one-line note
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), fontsize=7, markerscale=2, frameon=False)
    finish(fig, save)
    return ax
