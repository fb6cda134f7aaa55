"""Plots from AnnData: the right artists, one colour scale per panel, labelled colour bars, nothing blank."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from matplotlib.collections import EllipseCollection, PolyCollection
from PIL import Image

from spade_st import pl
from spade_st._validation import SpadeInputError


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _grid_adata(rng, n_side=8, genes=("G1", "G2", "G3")):
    xy = np.stack(np.meshgrid(np.arange(n_side), np.arange(n_side)), -1).reshape(-1, 2) * 100.0 + 50
    counts = rng.poisson(5, size=(len(xy), len(genes))).astype(np.float32)
    counts[:, 0] += (xy[:, 0] > 400) * 40  # G1 high on the right half
    a = ad.AnnData(sp.csr_matrix(counts), var=pd.DataFrame(index=list(genes)))
    a.obs_names = [f"s{i}" for i in range(len(xy))]
    a.obsm["spatial"] = xy
    return a


def _not_blank(path):
    with Image.open(path) as im:
        assert np.asarray(im.convert("L")).std() > 5


def test_embedding_colours_by_sample_and_expert(tmp_path, rng):
    a = ad.AnnData(obs=pd.DataFrame({"sample": ["a"] * 60 + ["b"] * 60}, index=[f"c{i}" for i in range(120)]))
    a.obsm["X_spade"] = np.concatenate([rng.normal(m, 1, size=(60, 20)) for m in (0, 5)]).astype(np.float32)
    a.obsm["spade_expert_weights"] = rng.dirichlet(np.ones(3), size=120)
    ax = pl.embedding(a, color="sample", save=tmp_path / "u.png")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    assert ax.get_xlabel() == "UMAP 1" and len(ax.collections) == 2
    assert "X_umap_spade" in a.obsm  # cached for the next call
    ax = pl.embedding(a, color="expert")
    assert {t.get_text() for t in ax.get_legend().get_texts()} <= {"expert 0", "expert 1", "expert 2"}
    _not_blank(tmp_path / "u.png")
    with pytest.raises(SpadeInputError, match="not an obs column"):
        pl.embedding(a, color="organ")


def test_spatial_panels_have_their_own_scales(rng):
    a = _grid_adata(rng)
    a.X = a.X.toarray()
    a.X[:, 1] *= 100  # a gene on another scale must not flatten the first one's panel
    fig = pl.spatial(a, ["G1", "G2"])
    axes = [ax for ax in fig.axes if ax.get_title() in ("G1", "G2")]
    arts = [next(c for c in ax.collections if isinstance(c, EllipseCollection)) for ax in axes]
    (_, hi1), (_, hi2) = (art.get_clim() for art in arts)
    assert hi2 > 10 * hi1  # each panel scaled to its own values
    assert len(fig.axes) == 4  # two panels + two colour bars
    assert all("log1p" in cb.get_ylabel() for cb in fig.axes if cb not in axes)
    tiles = pl.spatial(a, "G1", tile_size=100)
    assert any(isinstance(c, PolyCollection) for c in tiles.axes[0].collections)


def test_gene_maps_measured_vs_predicted_r_in_title(rng):
    a = _grid_adata(rng)
    from spade_st.genes import expression_target

    truth = expression_target(a, ["G1", "G2"])
    pred = ad.AnnData(truth + rng.normal(0, 0.01, truth.shape).astype(np.float32))
    pred.obs_names, pred.var_names = a.obs_names, ["G1", "G2"]
    fig = pl.gene_maps(a, pred, ["G1", "G2"])
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert "G1 (measured)" in titles
    r = [float(t.split("r = ")[1].rstrip(")")) for t in titles if "predicted" in t]
    assert len(r) == 2 and all(v > 0.99 for v in r)
    clims = [c.get_clim() for ax in fig.axes for c in ax.collections if isinstance(c, EllipseCollection)]
    assert len(clims) == 4 and len(set(clims)) == 4  # per-panel scales, predicted not on the measured scale
    with pytest.raises(SpadeInputError, match="same obs names"):
        bad = pred.copy()
        bad.obs_names = [f"x{i}" for i in range(bad.n_obs)]
        pl.gene_maps(a, bad)


def test_routing_map_and_slide_heatmap(tmp_path, rng):
    a = _grid_adata(rng)
    a.obsm["spade_expert_weights"] = rng.dirichlet(np.ones(4), size=a.n_obs)
    thumb = rng.integers(0, 255, size=(90, 90, 3), dtype=np.uint8)
    ax = pl.routing_map(a, img=thumb, scale=10.0, save=tmp_path / "r.png")
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert legend == {f"expert {e}" for e in np.unique(a.obsm["spade_expert_weights"].argmax(1))}
    _not_blank(tmp_path / "r.png")
    with pytest.raises(SpadeInputError, match=r"tl\.embed"):
        pl.routing_map(_grid_adata(rng))
    coords = np.stack(np.meshgrid(np.arange(0, 1400, 224), np.arange(0, 900, 224)), -1).reshape(-1, 2)
    fig = pl.slides.attention_heatmap(np.full((100, 150, 3), 230, np.uint8), coords, rng.random(len(coords)), 224, 10.0)
    assert fig.axes[1].get_ylabel() == "attention (min-max)"


def test_clustering_qc_and_fewshot_curves():
    ck = pd.DataFrame(
        {"k": [2, 4, 8], "wcss": [3.0, 2.0, 1.5], "silhouette": [0.3, 0.5, 0.4], "wcss_std": [1.0, 0.0, -1.0]}
    )
    one_organ = pd.DataFrame({"expert": [0, 1, 2], "spots": [10, 20, 5], "groups": [1, 1, 1]})
    fig = pl.curves.clustering_qc(ck, one_organ)
    titles = [ax.get_title() for ax in fig.axes]
    assert "organs per expert" not in titles and "choosing k" in titles and "spots per expert" in titles
    fig = pl.curves.clustering_qc(ck, one_organ.assign(groups=[1, 2, 2]))
    assert "organs per expert" in [ax.get_title() for ax in fig.axes]
    rows = [
        {
            "task": "fewshot_knn",
            "metric": "balanced_accuracy",
            "k": k,
            "source": s,
            "mean": 0.9,
            "ci_low": 0.7,
            "ci_high": 1.3,
        }
        for k in (1, 2, 4)
        for s in ("raw", "spade")
    ]
    fig = pl.curves.fewshot_curves(pd.DataFrame(rows))
    ax = fig.axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2 and max(b.get_paths()[0].vertices[:, 1].max() for b in bands) <= 1.0  # clipped
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"raw", "spade"}


def _integer_ticks(axis) -> list[float]:
    lo, hi = sorted(axis.get_view_interval())
    return [t for t in axis.get_ticklocs() if lo - 1e-9 <= t <= hi + 1e-9]


def test_axes_that_count_experts_or_k_have_whole_number_ticks():
    ck = pd.DataFrame({"k": [2, 4, 8, 16, 32], "wcss_std": [1, 0.5, 0, -0.5, -1.0], "silhouette": [0.3] * 5})
    qc = pd.DataFrame({"expert": [0, 1], "spots": [10, 23], "groups": [1, 2]})  # two experts: once -0.25 .. 1.25
    fig = pl.curves.clustering_qc(ck, qc)
    fig.canvas.draw()
    counted = 0
    for ax in fig.axes:
        for axis, label in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
            if label.startswith(("expert", "k", "organs", "training spots")):
                ticks = _integer_ticks(axis)
                assert ticks and all(float(t).is_integer() for t in ticks), (label, ticks)
                counted += 1
    assert counted == 5  # k; expert and spots; expert and organs
    bars = next(ax for ax in fig.axes if ax.get_title() == "spots per expert")
    assert _integer_ticks(bars.xaxis) == [0, 1]
    k_ax = next(ax for ax in fig.axes if ax.get_title() == "choosing k")
    assert [t.get_text() for t in k_ax.get_xticklabels()] == ["2", "4", "8", "16", "32"]  # plain numbers


def _bars(ax):
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    return [c for c in ax.get_children() if isinstance(c, AnchoredSizeBar)]


def _bar_label_and_width(bar) -> tuple[str, float]:
    return bar.txt_label.get_children()[0].get_text(), bar.size_bar.get_children()[0].get_width()


def test_every_slide_picture_has_a_scale_bar_in_um_when_the_pixel_size_is_known(rng):
    a = _grid_adata(rng)  # spots 100 level-0 px apart, 850 px of tissue
    a.obsm["spade_expert_weights"] = rng.dirichlet(np.ones(3), size=a.n_obs)
    thumb = rng.integers(0, 255, size=(90, 90, 3), dtype=np.uint8)
    px, scale = 0.5, 10.0  # µm per level-0 px, level-0 px per thumbnail px
    figs = {
        "spatial": pl.spatial(a, ["G1", "G2"], img=thumb, scale=scale, pixel_size_um=px).axes,
        "gene_maps": pl.gene_maps(a, _pred(a), ["G1", "G2"], img=thumb, scale=scale, pixel_size_um=px).axes,
        "routing_map": [pl.routing_map(a, img=thumb, scale=scale, pixel_size_um=px)],
        "attention": pl.slides.attention_heatmap(
            thumb, a.obsm["spatial"], rng.random(a.n_obs), 100, scale, pixel_size_um=px
        ).axes,
    }
    for name, axes in figs.items():
        pictures = [ax for ax in axes if ax.get_label() != "<colorbar>"]
        assert pictures, name
        for ax in pictures:
            bars = _bars(ax)
            assert len(bars) == 1, (name, ax.get_title())
            label, width = _bar_label_and_width(bars[0])
            length = bars[0].length_um
            assert label == f"{length:g} µm" and length in (10, 20, 50, 100, 200, 500, 1000, 2000), (name, label)
            assert width == pytest.approx(length / px / scale)  # data units are thumbnail px
            span = abs(np.diff(ax.get_xlim())[0]) * px * scale
            assert 0.1 <= length / span <= 0.35, (name, length, span)
    # without the pixel size: no bar (and nothing else changes)
    assert not _bars(pl.routing_map(a, img=thumb, scale=scale))
    assert not any(_bars(ax) for ax in pl.spatial(a, ["G1"], img=thumb, scale=scale).axes)


def _pred(a):
    from spade_st.genes import expression_target

    p = ad.AnnData(expression_target(a, ["G1", "G2"]) + np.float32(0.01))
    p.obs_names, p.var_names = a.obs_names, ["G1", "G2"]
    return p


def test_umap_by_expert_says_what_its_silhouette_is_of_and_gives_the_drawn_one(rng):
    from spade_st.eval.islands import expert_islands

    a = ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(120)]))
    a.obsm["X_spade"] = np.concatenate([rng.normal(m, 1, size=(60, 20)) for m in (0, 1)]).astype(np.float32)
    a.obsm["spade_expert_weights"] = np.repeat([[0.9, 0.1], [0.1, 0.9]], 60, axis=0)
    title = pl.embedding(a, color="expert").get_title()
    sil = expert_islands(a.obsm["X_spade"], np.repeat([0, 1], 60))["silhouette_by_expert"]
    drawn = expert_islands(a.obsm["X_umap_spade"], np.repeat([0, 1], 60))["silhouette_by_expert"]
    assert f"{sil:.2f} in the 20-d embedding" in title, title
    assert f"{drawn:.2f} in this 2-d UMAP" in title, title
    assert len(title.splitlines()) == 2  # a title and one line of note
    from spade_st.pl.embedding import island_note

    a.obsm["X_raw"] = rng.normal(size=(120, 7))
    assert "(raw features, 7-d: " in island_note(a, raw="X_raw")
    a.obsm["spade_expert_weights"] = np.repeat([[0.9, 0.1]], 120, axis=0)  # one expert: no silhouette, no "nan"
    assert island_note(a) == "silhouette by expert: none (every spot has the same dominant expert)"
