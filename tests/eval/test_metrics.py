"""Few-shot probes, gene regression, retrieval and CI statistics on data with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spade_st.eval.fewshot import PROBES, few_shot, sample_shots
from spade_st.eval.genes import hest_ridge, knn_expression, pearson_per_gene
from spade_st.eval.retrieval import cross_modal, recall_at_k
from spade_st.eval.stats import mean_ci, summarise


def _classes(n=300, d=20, seed=0, sep=3.0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.array(["a", "b", "c"]), n // 3)
    centres = rng.normal(size=(3, d)) * sep
    x = centres[np.searchsorted(["a", "b", "c"], y)] + rng.normal(size=(n, d))
    return x, y


def test_shots_are_per_class_and_disjoint():
    _, y = _classes()
    tr, te = sample_shots(y, 4, seed=0, classes=["a", "b", "c"])
    assert len(tr) == 12 and not set(tr) & set(te) and len(tr) + len(te) == len(y)
    assert pd.Series(y[tr]).value_counts().to_dict() == {"a": 4, "b": 4, "c": 4}
    assert (sample_shots(y, 4, 0, ["a", "b", "c"])[0] == tr).all()


def test_few_shot_learns_and_shuffled_is_chance():
    x, y = _classes()
    res = few_shot(x, y, ks=(1, 8), seeds=5)
    assert set(res["probe"]) == set(PROBES)
    acc = res[(res.metric == "balanced_accuracy") & (res.k == 8)].groupby("probe")["value"].mean()
    assert (acc > 0.9).all()
    ys = np.random.default_rng(0).permutation(y)
    res0 = few_shot(x, ys, ks=(8,), seeds=5)
    acc0 = res0[res0.metric == "balanced_accuracy"].groupby("probe")["value"].mean()
    assert (abs(acc0 - 1 / 3) < 0.12).all()


def test_few_shot_drops_missing_and_rare_labels():
    x, y = _classes()
    y = y.astype(object)
    y[:5] = None
    y[5] = "rare"
    res = few_shot(x, y, ks=(2,), seeds=2, probes=("simpleshot",))
    assert len(res) == 2 * 3  # 2 seeds x 3 metrics, 'rare' (1 spot) dropped


def test_hest_ridge_and_knn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 30))
    w = rng.normal(size=(30, 5))
    y = x @ w + 0.1 * rng.normal(size=(400, 5))
    pred = hest_ridge(x[:300], y[:300], x[300:])
    assert np.nanmean(pearson_per_gene(pred, y[300:])) > 0.95
    knn = knn_expression(x[300:], x[:300], y[:300], k=5)
    assert np.nanmean(pearson_per_gene(knn, y[300:])) > 0.3
    assert np.isnan(pearson_per_gene(np.ones((5, 1)), np.arange(5.0)[:, None])[0])


def test_retrieval():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 8))
    assert recall_at_k(a, a + 0.01 * rng.normal(size=a.shape))[1] == 1.0
    r = cross_modal(a, rng.normal(size=(50, 8)))
    assert r["img2expr_R@10"] < 0.5 and set(r) == {f"{d}_R@{k}" for d in ("img2expr", "expr2img") for k in (1, 5, 10)}


def test_mean_ci():
    m, sd, lo, hi, n = mean_ci([1.0, 2.0, 3.0, np.nan])
    assert (m, n) == (2.0, 3) and sd == pytest.approx(1.0)
    assert lo == pytest.approx(2 - 4.302653 / np.sqrt(3), rel=1e-5) and hi == pytest.approx(
        2 + 4.302653 / np.sqrt(3), rel=1e-5
    )
    s = summarise(pd.DataFrame({"g": ["a", "a", "b"], "value": [1.0, 3.0, 5.0]}), ["g"])
    assert s.set_index("g").loc["b", "n"] == 1 and np.isnan(s.set_index("g").loc["b", "ci_low"])
