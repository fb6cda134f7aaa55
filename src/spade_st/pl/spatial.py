"""Pictures on the tissue, from AnnData: expression (measured or predicted), measured vs predicted, routing.

Coordinates are ``obsm['spatial']`` in level-0 pixels; ``img`` is an RGB thumbnail and ``scale`` the level-0
pixels per thumbnail pixel (``spade_st.io.open_wsi(path).get_thumbnail()`` and ``dimensions[0] / width``).
Spots are drawn as discs of their real size (``spot_size``, level-0 px; default: 0.9 x the nearest-neighbour
spacing), tiles as squares (``tile_size``). Every panel has its own colour scale and colour bar, and, when the
slide's level-0 µm per pixel is given (``pixel_size_um``), a scale bar in µm.
"""

from __future__ import annotations

import numpy as np

from .. import _keys as K
from .._validation import SpadeInputError
from ._util import categorical_colors, finish, get_ax, new_figure, robust_limits, scale_bar

UNIT = "log1p(counts per 10k)"


def _xy(adata, scale: float) -> np.ndarray:
    if K.SPATIAL not in adata.obsm:
        msg = "the AnnData has no obsm['spatial'] (spot or tile centres in level-0 pixels)"
        raise SpadeInputError(msg)
    return np.asarray(adata.obsm[K.SPATIAL], float)[:, :2] / float(scale)


def _spacing(xy: np.ndarray) -> float:
    if len(xy) < 2:
        return 10.0
    from scipy.spatial import cKDTree

    d = cKDTree(xy).query(xy, k=2)[0][:, 1]
    return float(np.median(d[d > 0])) if (d > 0).any() else 10.0


def _canvas(ax, img, xy, pad: float, alpha: float = 0.55):
    if img is not None:
        ax.imshow(img, alpha=alpha)
    ax.set_xlim(xy[:, 0].min() - pad, xy[:, 0].max() + pad)  # the tissue, not the whole slide
    ax.set_ylim(xy[:, 1].max() + pad, xy[:, 1].min() - pad)
    ax.set_aspect("equal")


def draw_values(ax, xy, values, img=None, size: float | None = None, square: bool = False, cmap="viridis", **kw):
    """Values at ``xy`` (thumbnail px) as discs (or squares) of ``size`` px, own colour scale; returns the artist."""
    from matplotlib.collections import EllipseCollection, PolyCollection

    size = size or 0.9 * _spacing(xy)
    _canvas(ax, img, xy, size, alpha=1.0 if square else 0.55)  # tiles are translucent over the full H&E
    vmin, vmax = kw.pop("clim", None) or robust_limits(values)
    if square:
        h = size / 2
        verts = [[(x - h, y - h), (x + h, y - h), (x + h, y + h), (x - h, y + h)] for x, y in xy]
        art = PolyCollection(verts, cmap=cmap, linewidths=0, alpha=0.6)
    else:
        n = len(xy)
        art = EllipseCollection(
            np.full(n, size), np.full(n, size), np.zeros(n), units="xy", offsets=xy, offset_transform=ax.transData
        )
        art.set_cmap(cmap)
        art.set_linewidth(0)
    art.set_array(np.asarray(values, float))
    art.set_clim(vmin, vmax)
    ax.add_collection(art)
    ax.set_xticks([])
    ax.set_yticks([])
    return art


def _values(adata, key: str) -> tuple[np.ndarray, str]:
    from ..genes.symbols import match_names

    key = match_names([key], list(adata.var_names))[0] or key  # gene symbols match in any case
    if key in adata.var_names:
        col = adata[:, key].X
        return np.asarray(col.toarray() if hasattr(col, "toarray") else col, float).ravel(), UNIT
    if key in adata.obs:
        return np.asarray(adata.obs[key], float), key
    msg = f"{key!r} is neither a gene (var_names) nor an obs column of the AnnData"
    raise SpadeInputError(msg)


def spatial(
    adata,
    color,
    *,
    img=None,
    scale: float = 1.0,
    spot_size: float | None = None,
    tile_size: float | None = None,
    ncols: int = 3,
    title: str | None = None,
    cmap: str = "viridis",
    save=None,
    show_image: bool = True,
    r_floor: float = K.PREDICTED_R,
    pixel_size_um: float | None = None,
):
    """One panel per gene or numeric ``obs`` column over the tissue, each on its own colour scale.

    Where ``adata.var`` has ``cv_r`` (predicted expression, :func:`spade_st.tl.predict_expression`), each
    panel's title gives it, and a gene below ``r_floor`` is marked "not predicted" instead of coloured.

    Parameters
    ----------
    adata
        Rows with ``obsm['spatial']`` (level-0 px), e.g. :func:`spade_st.tl.predict_expression`'s output.
    color
        A gene (any case) or numeric ``obs`` column, or a list of them.
    img, scale
        RGB thumbnail and level-0 pixels per thumbnail pixel (module doc).
    spot_size, tile_size
        Disc diameter or square side in level-0 px (default: discs of 0.9 x the spacing).
    ncols, title, cmap, save
        Layout, figure title, colour map, file to write.
    show_image
        With ``img``: a first panel of the H&E alone, beside the overlays.
    r_floor
        Genes whose ``var['cv_r']`` is below it (or NaN) are drawn as "not predicted".
    pixel_size_um
        Level-0 µm per pixel of the slide: every panel gets a scale bar in µm (none when ``None``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    keys = [color] if isinstance(color, str) else list(color)
    xy = _xy(adata, scale)
    size = (tile_size or spot_size) / scale if (tile_size or spot_size) else None
    he = img is not None and show_image
    n = len(keys) + he
    nc = min(ncols, n)
    nr = -(-n // nc)
    fig, axes = new_figure(nr, nc, figsize=(4.2 * nc, 4.0 * nr), squeeze=False)
    flat = list(axes.flat)
    if he:
        _canvas(flat[0], img, xy, size or 0.9 * _spacing(xy), alpha=1.0)
        flat[0].set_xticks([])
        flat[0].set_yticks([])
        flat[0].set_title("H&E", fontsize=10)
        scale_bar(flat[0], pixel_size_um, scale)
    for ax, key in zip(flat[he:], keys, strict=False):
        vals, unit = _values(adata, key)
        r = _cv_r(adata, key)
        if r is not None and np.isfinite(r) and r < r_floor:
            _canvas(ax, img, xy, size or 0.9 * _spacing(xy), alpha=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            said = f"CV r {r:.2f} < {r_floor:g}" if np.isfinite(r) else "CV r not measured"
            ax.text(
                0.5,
                0.5,
                f"not predicted\n({said})",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=10,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.5"},
            )
            ax.set_title(f"{key}: not predicted", fontsize=10)
            scale_bar(ax, pixel_size_um, scale)
            continue
        art = draw_values(ax, xy, vals, img, size, square=tile_size is not None, cmap=cmap)
        fig.colorbar(art, ax=ax, shrink=0.7, label=unit)
        ax.set_title(
            key if r is None else f"{key} (CV r {r:.2f})" if np.isfinite(r) else f"{key} (CV r n/a)", fontsize=10
        )
        scale_bar(ax, pixel_size_um, scale)
    for ax in flat[n:]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return finish(fig, save)


def _cv_r(adata, key: str) -> float | None:
    """The head's cross-validated r of gene ``key`` where the AnnData carries it (``var['cv_r']``), else None."""
    if "cv_r" not in adata.var or key not in adata.var_names:
        return None
    return float(adata.var.loc[key, "cv_r"])


def gene_maps(
    adata, predicted, genes=None, *, img=None, scale: float = 1.0, spot_size=None, save=None, pixel_size_um=None
):
    """Measured and predicted expression of ``genes``, side by side on the tissue.

    Parameters
    ----------
    adata
        The sample with raw counts in ``X`` (top row: their log1p counts per 10k).
    predicted
        :func:`spade_st.tl.predict_expression` output for spots of ``adata`` (same obs names; bottom row).
    genes
        Genes to draw (any case; default: the first three of ``predicted``).
    img, scale, spot_size, save, pixel_size_um
        As :func:`spatial` (``pixel_size_um``: a scale bar in µm on every panel).

    Returns
    -------
    matplotlib.figure.Figure: each panel on its own colour scale; the predicted panels' titles give Pearson r.
    """
    from ..genes import expression_target
    from ..genes.ridge import pearson_per_gene
    from ..genes.symbols import match_names

    if genes is None:
        genes = list(predicted.var_names[:3])
    else:  # gene symbols match in any case; unknown names fail below with their own message
        genes = [m or g for g, m in zip(genes, match_names(genes, list(predicted.var_names)), strict=True)]
    pos = adata.obs_names.get_indexer(predicted.obs_names)
    if (pos < 0).any():
        msg = "predicted has rows that are not spots of adata; predict on the same spots (same obs names)"
        raise SpadeInputError(msg)
    measured = expression_target(adata, genes)[pos]
    pred = np.stack([_values(predicted, g)[0] for g in genes], 1)
    r = pearson_per_gene(pred, measured)
    xy = _xy(predicted if K.SPATIAL in predicted.obsm else adata[pos], scale)
    size = spot_size / scale if spot_size else None
    fig, axes = new_figure(2, len(genes), figsize=(3.6 * len(genes), 6.6), squeeze=False)
    for j, g in enumerate(genes):
        for row, (vals, lab) in enumerate(((measured[:, j], "measured"), (pred[:, j], f"predicted, r = {r[j]:.2f}"))):
            art = draw_values(axes[row, j], xy, vals, img, size, cmap="magma")
            fig.colorbar(art, ax=axes[row, j], shrink=0.7, label=UNIT)
            axes[row, j].set_title(f"{g} ({lab})", fontsize=9)
            scale_bar(axes[row, j], pixel_size_um, scale)
    return finish(fig, save)


def routing_map(
    adata, *, img=None, scale: float = 1.0, spot_size=None, title: str = "", ax=None, save=None, pixel_size_um=None
):
    """Dominant expert per spot (colour) and its weight (opacity).

    Parameters
    ----------
    adata
        Spots with ``obsm['spade_expert_weights']`` (from :func:`spade_st.tl.embed`) and ``obsm['spatial']``.
    img, scale, spot_size, title, ax, save, pixel_size_um
        As :func:`spatial`; ``ax`` draws into an existing Axes; ``pixel_size_um``: a scale bar in µm.

    Returns
    -------
    matplotlib.axes.Axes
    """
    key = "spade_expert_weights"
    if key not in adata.obsm:
        msg = f"the AnnData has no obsm[{key!r}]; run spade_st.tl.embed(adata, model) first"
        raise SpadeInputError(msg)
    from matplotlib.collections import EllipseCollection

    w = np.asarray(adata.obsm[key])
    xy = _xy(adata, scale)
    size = spot_size / scale if spot_size else 0.9 * _spacing(xy)
    fig, ax = get_ax(ax, (6, 6))
    _canvas(ax, img, xy, size)
    dom = w.argmax(1)
    palette = categorical_colors(w.shape[1])
    cols = np.array(palette)[dom]
    cols[:, 3] = 0.25 + 0.75 * w.max(1)
    n = len(xy)
    ax.add_collection(
        EllipseCollection(
            np.full(n, size),
            np.full(n, size),
            np.zeros(n),
            units="xy",
            offsets=xy,
            offset_transform=ax.transData,
            facecolors=cols,
            linewidths=0,
        )
    )
    for e in np.unique(dom):
        ax.scatter([], [], color=palette[e], label=f"expert {e}")
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), fontsize=7, frameon=False)
    ax.set_axis_off()
    ax.set_title(title or "dominant expert (opacity = weight)")
    scale_bar(ax, pixel_size_um, scale)
    finish(fig, save)
    return ax
