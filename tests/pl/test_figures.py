"""One rule for every ``pl`` function: it returns its Figure (or Axes) and leaves nothing open in pyplot, so
Jupyter's inline backend does not show the returned figure a second time."""

from __future__ import annotations

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from spade_st import pl


def _spots(n_side: int = 6) -> ad.AnnData:
    rng = np.random.default_rng(0)
    xy = np.stack(np.meshgrid(np.arange(n_side), np.arange(n_side)), -1).reshape(-1, 2) * 100.0 + 50
    a = ad.AnnData(sp.csr_matrix(rng.poisson(5, size=(len(xy), 2)).astype(np.float32)))
    a.var_names, a.obs_names = ["G1", "G2"], [f"s{i}" for i in range(len(xy))]
    a.obsm["spatial"] = xy
    a.obs["sample"] = ["a", "b"] * (len(xy) // 2)
    a.obsm["X_spade"] = rng.normal(size=(len(xy), 8)).astype(np.float32)
    a.obsm["spade_expert_weights"] = rng.dirichlet(np.ones(3), size=len(xy))
    return a


def _predicted(a: ad.AnnData) -> ad.AnnData:
    from spade_st.genes import expression_target

    truth = expression_target(a, ["G1", "G2"])
    p = ad.AnnData(truth + np.float32(0.01))
    p.obs_names, p.var_names = a.obs_names, ["G1", "G2"]
    return p


def _curves() -> pd.DataFrame:
    rows = [
        {"task": "t", "metric": "balanced_accuracy", "k": k, "source": s, "mean": 0.8, "ci_low": 0.7, "ci_high": 0.9}
        for k in (1, 2)
        for s in ("raw", "spade")
    ]
    return pd.DataFrame(rows)


CALLS = {
    "embedding": lambda a, save: pl.embedding(a, "X_spade", "sample", save=save),
    "spatial": lambda a, save: pl.spatial(a, ["G1", "G2"], save=save),
    "gene_maps": lambda a, save: pl.gene_maps(a, _predicted(a), ["G1", "G2"], save=save),
    "routing_map": lambda a, save: pl.routing_map(a, img=np.full((60, 60, 3), 200, np.uint8), scale=10, save=save),
    "clustering_qc": lambda a, save: pl.curves.clustering_qc(
        pd.DataFrame({"k": [2, 4], "wcss_std": [1.0, -1.0], "silhouette": [0.3, 0.5]}),
        pd.DataFrame({"expert": [0, 1], "spots": [10, 20], "groups": [1, 2]}),
        save=save,
    ),
    "fewshot_curves": lambda a, save: pl.curves.fewshot_curves(_curves(), save=save),
    "attention_heatmap": lambda a, save: pl.slides.attention_heatmap(
        np.full((40, 40, 3), 200, np.uint8), np.array([[0, 0], [100, 100]]), np.array([0.2, 0.8]), 100, 10, save=save
    ),
}


@pytest.mark.parametrize("saved", [False, True], ids=["returned", "saved"])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_pl_returns_its_figure_and_leaves_pyplot_empty(name, saved, tmp_path):
    plt.close("all")
    out = CALLS[name](_spots(), tmp_path / f"{name}.png" if saved else None)
    fig = out.figure if isinstance(out, Axes) else out
    assert isinstance(fig, Figure), type(out)
    assert plt.get_fignums() == [], f"pl.{name} left a figure open in pyplot: Jupyter would show it twice"
    assert fig.axes  # drawn, and still usable after the call
    if saved:
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_pl_draws_into_the_callers_axes_and_leaves_its_figure_open(tmp_path):
    plt.close("all")
    fig, ax = plt.subplots()
    try:
        assert pl.routing_map(_spots(), ax=ax, save=tmp_path / "r.png") is ax
        assert plt.get_fignums() == [fig.number]  # the caller's figure: theirs to show or close
    finally:
        plt.close(fig)


def test_not_predicted_only_for_a_measured_r_below_the_floor():
    import anndata as ad
    import numpy as np
    import pandas as pd

    from spade_st.pl import spatial

    rng = np.random.default_rng(0)
    a = ad.AnnData(
        X=rng.random((30, 3)).astype(np.float32),
        var=pd.DataFrame({"cv_r": [np.nan, 0.05, 0.3]}, index=["A", "B", "C"]),
    )
    a.obsm["spatial"] = rng.uniform(0, 100, (30, 2))
    fig = spatial(a, ["A", "B", "C"])
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:3] == ["A (CV r n/a)", "B: not predicted", "C (CV r 0.30)"]  # a head without r is still drawn
