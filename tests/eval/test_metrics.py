"""Few-shot probes, gene regression, retrieval and CI statistics on data with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spade_st._validation import SpadeInputError
from spade_st.eval.fewshot import PROBES, few_shot, sample_shots
from spade_st.eval.genes import (
    gene_target,
    hest_ridge,
    knn_expression,
    match_barcodes,
    pearson_per_gene,
    ridge_cv,
)
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


def test_few_shot_uses_only_classes_that_can_give_k_shots_and_a_test_example():
    """A1-like labels: a 2-spot and a 5-spot class cannot give 8 shots plus a test example; at k = 1 they can."""
    x, y = _classes()
    y = y.astype(object)
    y[:2] = "immune infiltrate"
    y[100:105] = "undetermined"
    res = few_shot(x, y, ks=(1, 4, 8), seeds=3, probes=("simpleshot",))
    used = res.groupby("k")["classes"].agg(set)
    assert used[1] == {"a;b;c;immune infiltrate;undetermined"}
    assert used[4] == {"a;b;c;undetermined"}
    assert used[8] == {"a;b;c"}
    # every test example of a k belongs to a class that entered at that k: 3 classes -> chance 1/3 floor holds
    acc8 = res[(res.k == 8) & (res.metric == "balanced_accuracy")]["value"]
    assert (acc8 > 0.8).all()
    with pytest.raises(ValueError, match="cannot give 8 shots"):
        sample_shots(np.asarray(y, dtype=str), 8, 0, ["a", "immune infiltrate"])


def test_gene_targets():
    import anndata as ad

    counts = np.array([[0, 9, 1], [3, 3, 4]], dtype=np.float32)
    a = ad.AnnData(counts)
    np.testing.assert_allclose(gene_target(a, "log1p").to_numpy(), np.log1p(counts))
    np.testing.assert_allclose(
        gene_target(a, "cp10k").to_numpy(), np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    )
    with pytest.raises(SpadeInputError, match="unknown gene target"):
        gene_target(a, "raw")


def test_ridge_cv_chooses_alpha_from_training_groups_only():
    """Few rows, many noisy correlated features (as 1280-d encoder features on a few hundred spots): the HEST
    ridge is nearly unregularised there; alpha chosen by CV over the training groups predicts better."""
    rng = np.random.default_rng(0)
    d = 600
    loadings, coef = rng.normal(size=(5, d)), rng.normal(size=(5, 4))

    def make(n):
        z = rng.normal(size=(n, 5))
        return z @ loadings + 10 * rng.normal(size=(n, d)), z @ coef + 0.5 * rng.normal(size=(n, 4))

    (x, y), (xte, yte) = make(180), make(200)
    groups = np.repeat(np.arange(3), 60)
    pred, alpha = ridge_cv(x, y, xte, groups)
    assert alpha >= 100
    r_cv = np.nanmean(pearson_per_gene(pred, yte))
    r_fixed = np.nanmean(pearson_per_gene(hest_ridge(x, y, xte), yte))
    assert r_cv > r_fixed + 0.03, (r_cv, r_fixed)
    # the test rows never choose alpha: other test rows leave it unchanged
    assert ridge_cv(x, y, xte[::-1] * 3, groups)[1] == alpha
    with pytest.raises(SpadeInputError, match="two groups"):
        ridge_cv(x, y, xte, np.zeros(len(x)))


def test_rows_are_matched_by_barcode_never_by_position():
    obs = np.array(["s1", "s2", "s3", "s4"])
    np.testing.assert_array_equal(match_barcodes(np.array(["s3", "s1"]), obs, "f.h5"), [2, 0])
    with pytest.raises(SpadeInputError, match="no barcodes"):
        match_barcodes(None, obs, "f.h5")
    with pytest.raises(SpadeInputError, match=r"duplicated barcodes.*'s1'"):
        match_barcodes(np.array(["s1", "s1"]), obs, "f.h5")
    with pytest.raises(SpadeInputError, match="duplicated"):
        match_barcodes(np.array(["s1"]), np.array(["s1", "s1"]), "f.h5")
    with pytest.raises(SpadeInputError, match=r"1 of 2 barcodes are not spots.*'zz'"):
        match_barcodes(np.array(["s1", "zz"]), obs, "f.h5")


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
