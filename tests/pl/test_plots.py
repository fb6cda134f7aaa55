"""Each plot function writes a non-empty image of the expected size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from spade_st import pl


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _check(path, min_w=300, min_h=250):
    assert path.is_file() and path.stat().st_size > 5000
    with Image.open(path) as im:
        w, h = im.size
        arr = np.asarray(im.convert("L"))
    assert w >= min_w and h >= min_h
    assert arr.std() > 5  # not a blank canvas


def test_umap(tmp_path, rng):
    x = np.concatenate([rng.normal(m, 1, size=(60, 20)) for m in (0, 5)])
    pl.umap(x, ["a"] * 60 + ["b"] * 60, title="t", save=tmp_path / "u.png")
    _check(tmp_path / "u.png")


def test_routing_and_gene_maps(tmp_path, rng):
    thumb = rng.integers(0, 255, size=(200, 300, 3), dtype=np.uint8)
    xy = rng.uniform(10, 190, size=(50, 2))
    w = rng.dirichlet(np.ones(4), size=50)
    pl.routing_map(thumb, xy, w, save=tmp_path / "r.png")
    _check(tmp_path / "r.png")
    m = rng.normal(size=(50, 2))
    pl.gene_maps(thumb, xy, m, m + 0.1, ["G1", "G2"], save=tmp_path / "g.png")
    _check(tmp_path / "g.png", min_w=500)


def test_attention_heatmap(tmp_path, rng):
    thumb = np.full((100, 150, 3), 230, np.uint8)
    coords = np.stack(np.meshgrid(np.arange(0, 1400, 224), np.arange(0, 900, 224)), -1).reshape(-1, 2)
    pl.attention_heatmap(thumb, coords, rng.random(len(coords)), 224, 10.0, save=tmp_path / "a.png")
    _check(tmp_path / "a.png")


def test_clustering_qc_and_fewshot_curves(tmp_path):
    ck = pd.DataFrame(
        {"k": [2, 4, 8], "wcss": [3.0, 2.0, 1.5], "silhouette": [0.3, 0.5, 0.4], "wcss_std": [1.0, 0.0, -1.0]}
    )
    qc = pd.DataFrame({"expert": [0, 1, 2], "spots": [10, 20, 5], "groups": [1, 2, 2]})
    pl.clustering_qc(ck, qc, save=tmp_path / "c.png")
    _check(tmp_path / "c.png", min_w=600)
    rows = [
        {
            "task": "fewshot_knn",
            "metric": "balanced_accuracy",
            "k": k,
            "source": s,
            "mean": 0.5 + 0.05 * k**0.5,
            "ci_low": 0.45,
            "ci_high": 0.7,
        }
        for k in (1, 2, 4)
        for s in ("raw", "spade")
    ]
    pl.fewshot_curves(pd.DataFrame(rows), save=tmp_path / "f.png")
    _check(tmp_path / "f.png")
