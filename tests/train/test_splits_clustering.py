"""Sample splits and the two-stage clustering."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from spade_st._validation import SpadeInputError
from spade_st.experts import TwoStageClustering, choose_k, seed_agreement
from spade_st.train.splits import make_split, spatial_blocks

from conftest import HEST_TABLE, require


@dataclass
class Smp:
    id: str
    organ: str
    patient: str


def _cohort():
    out = []
    for _o, organ in enumerate(["Breast", "Lung", "Skin"]):
        for p in range(6):
            for r in range(2):
                out.append(Smp(f"{organ}{p}_{r}", organ, f"{organ[0]}{p}"))
    out.append(Smp("Eye0", "Eye", "E0"))  # single-patient organ stays in train
    return out


def test_split_patient_disjoint_stratified_seeded():
    smp = _cohort()
    sp = make_split(smp, val_fraction=0.2, seed=3)
    by = {s.id: s for s in smp}
    tr_p = {by[i].patient for i in sp.train}
    va_p = {by[i].patient for i in sp.val}
    assert not tr_p & va_p
    for organ in ["Breast", "Lung", "Skin"]:
        n_val = sum(by[i].organ == organ for i in sp.val)
        assert n_val == 4  # ceil(0.2 * 12) = 3 -> whole patients of 2 sections -> 4
    assert "Eye0" in sp.train
    assert make_split(smp, 0.2, seed=3) == sp
    assert make_split(smp, 0.2, seed=4).val != sp.val


def test_split_exclude():
    smp = _cohort()
    sp = make_split(smp, 0.2, seed=0, exclude=["Breast0_0", "Lung3_1"])
    assert "Breast0_0" not in sp.train + sp.val and "Lung3_1" not in sp.train + sp.val
    with pytest.raises(SpadeInputError, match="NOPE"):
        make_split(smp, exclude=["NOPE"])


HER2ST_FIVE = [Smp("A1", "Breast", "A"), Smp("B4", "Breast", "B")] + [Smp(f"C{i}", "Breast", "C") for i in (2, 3, 4)]


@pytest.mark.parametrize("seed", range(12))
def test_split_never_takes_the_majority_patient(seed):
    """The five her2st sections: patient C (3 of 5 sections) always trains; --exclude C4 trains on C2 and C3."""
    sp = make_split(HER2ST_FIVE, val_fraction=0.2, seed=seed)
    assert {"C2", "C3", "C4"} <= set(sp.train) and len(sp.val) == 1 and sp.val[0] in ("A1", "B4")
    sp = make_split(HER2ST_FIVE, val_fraction=0.2, seed=seed, exclude=["C4"])
    assert {"C2", "C3"} <= set(sp.train) and sp.val in (["A1"], ["B4"]) and not sp.val_blocks
    assert "validate" in sp.reasons["Breast"]


def test_split_with_too_few_patients_validates_on_spatial_blocks():
    sp = make_split(HER2ST_FIVE, val_fraction=0.2, seed=0, exclude=["C2", "C3", "C4"])  # patients A and B only
    assert sp.train == ["A1", "B4"] and sp.val == [] and sp.val_blocks == ["A1", "B4"]
    assert "spatial blocks" in sp.reasons["Breast"] and "only 2 patient(s)" in sp.reasons["Breast"]
    # a 30 x 30 array of spots: the held-out spots are whole grid cells, about 20 % of the spots
    yy, xx = np.mgrid[0:30, 0:30]
    coords = np.c_[xx.ravel(), yy.ravel()] * 200.0
    masks = {sid: sp.block_mask(sid, coords) for sid in sp.val_blocks}
    cells = spatial_blocks(coords)
    for m in masks.values():
        assert 0.1 <= m.mean() <= 0.3
        for c in np.unique(cells):  # each cell is held out whole or not at all
            assert m[cells == c].all() or not m[cells == c].any()
        # contiguous: most held-out spots have all four array neighbours held out (random spots would not)
        grid = m.reshape(30, 30)
        inner = grid[1:-1, 1:-1] & grid[:-2, 1:-1] & grid[2:, 1:-1] & grid[1:-1, :-2] & grid[1:-1, 2:]
        assert inner.sum() > 0.5 * grid.sum()
    assert not np.array_equal(masks["A1"], masks["B4"])  # seeded per sample
    np.testing.assert_array_equal(sp.block_mask("A1", coords), masks["A1"])  # deterministic
    assert not sp.block_mask("C2", coords).any()


def test_split_at_hest_scale_is_ninety_ten_by_organ():
    """The real HEST-1k table: per organ, validation is whole patients, close to 10 % and never a majority."""
    t = pd.read_csv(require(HEST_TABLE))
    smp = [Smp(r.id, r.organ, r.patient if isinstance(r.patient, str) else r.id) for r in t.itertuples()]
    sp = make_split(smp, val_fraction=0.1, seed=42)
    by = {s.id: s for s in smp}
    assert 0.09 <= len(sp.val) / len(smp) <= 0.12
    for organ, g in t.groupby("organ"):
        members = [by[i] for i in g["id"]]
        pats = {s.patient for s in members}
        n_val = sum(i in set(sp.val) for i in g["id"])
        val_p = {s.patient for s in members if s.id in set(sp.val)}
        assert not val_p & {s.patient for s in members if s.id in set(sp.train)}, organ
        if len(pats) >= 3:
            share = len(members) / len(pats)
            assert 1 <= n_val <= np.ceil(0.1 * len(members)) + share and 2 * n_val < len(members), organ
        else:
            assert n_val == 0 and set(g["id"]) <= set(sp.val_blocks), organ


def _blobs(seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=10, size=(8, 16))
    X = np.concatenate([c + rng.normal(size=(100, 16)) for c in centers]).astype(np.float32)
    groups = np.repeat(["A", "B"], 400)
    return X, groups, np.repeat(np.arange(8), 100)


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_two_stage_recovers_structure(backend):
    X, groups, truth = _blobs()
    clu = TwoStageClustering(k1=4, n_experts=4, backend=backend, seed=0).fit(X, groups)
    assert clu.centroids_.shape == (8, 16)
    assert list(clu.centroid_group_) == ["A"] * 4 + ["B"] * 4
    # every planted blob lies within a single stage-1 cluster, hence a single expert
    for b in range(8):
        assert len(set(clu.labels_[truth == b])) == 1
    # an expert owns exactly the spots of its stage-1 clusters
    np.testing.assert_array_equal(clu.experts_, clu.centroid_expert_[clu.labels_])
    assert (clu.predict(X) == clu.experts_).mean() > 0.99
    qc = clu.qc_table(groups)
    assert qc["spots"].sum() == 800 and set(qc.columns) >= {"expert", "spots", "groups", "largest_group_share"}


def test_small_group_rule():
    X, groups, _ = _blobs()
    X, groups = np.concatenate([X, X[:3]]), np.concatenate([groups, ["tiny"] * 3])
    clu = TwoStageClustering(k1=4, n_experts=3).fit(X, groups)
    assert clu.group_k_["tiny"] == 3
    with pytest.raises(SpadeInputError, match="fewer than k1=4"):
        TwoStageClustering(k1=4, n_experts=3, small_group="error").fit(X, groups)


def test_too_many_experts_and_unfitted():
    X, groups, _ = _blobs()
    with pytest.raises(SpadeInputError, match="cannot form 20 experts"):
        TwoStageClustering(k1=4, n_experts=20).fit(X, groups)
    with pytest.raises(RuntimeError, match="not fitted"):
        TwoStageClustering().predict(X)
    with pytest.raises(SpadeInputError, match="NaN"):
        TwoStageClustering().fit(np.full((10, 2), np.nan))


def test_choose_k_and_seed_agreement():
    X, _groups, _ = _blobs()
    df = choose_k(X, ks=(2, 8, 16))
    assert df.set_index("k")["silhouette"].idxmax() == 8  # the planted number of blobs
    # 4 tissue types, each seen in both organs: experts should be the tissue types, spanning both organs
    rng = np.random.default_rng(5)
    types = rng.normal(scale=20, size=(4, 16))
    X2 = np.concatenate([t + o + rng.normal(size=(100, 16)) for o in (0.0, 1.5) for t in types]).astype(np.float32)
    g2 = np.repeat(["A", "B"], 400)
    # (faiss' random initialisation often lands in a local minimum on 4 tight blobs; k-means++ does not)
    ari = seed_agreement(X2, g2, seeds=(0, 1, 2), k1=4, n_experts=4, backend="sklearn")
    assert (ari["ari"] > 0.99).all()
    clu = TwoStageClustering(k1=4, n_experts=4, backend="sklearn").fit(X2, g2)
    assert (clu.qc_table(g2)["groups"] == 2).all()  # every expert spans both organs


def test_clustering_from_a_row_store_equals_in_memory(tmp_path, monkeypatch):
    """A RowFile (or a subset of one) clusters exactly as the array it holds, read in chunks."""
    import spade_st.experts.clustering as clustering
    from spade_st.train.store import RowFile, RowSubset

    X, groups, _ = _blobs()
    np.save(tmp_path / "f.npy", X)
    monkeypatch.setattr(clustering, "_CHUNK", 37)  # many chunks
    a = TwoStageClustering(k1=4, n_experts=4, seed=0).fit(X, groups)
    b = TwoStageClustering(k1=4, n_experts=4, seed=0).fit(RowFile(tmp_path / "f.npy"), groups)
    np.testing.assert_array_equal(a.centroids_, b.centroids_)
    np.testing.assert_array_equal(a.experts_, b.experts_)
    rows = np.arange(0, 800, 3)
    np.testing.assert_array_equal(a.predict(X[rows]), b.predict(RowSubset(RowFile(tmp_path / "f.npy"), rows)))


def test_large_group_fits_on_a_seeded_subsample():
    """A group above max_points_per_centroid * k fits on a seeded subsample; every point is still labelled."""
    X, groups, truth = _blobs()
    kw = dict(k1=4, n_experts=4, seed=0, max_points_per_centroid=20)  # cap 80 of the 400 points per group
    a = TwoStageClustering(**kw).fit(X, groups)
    b = TwoStageClustering(**kw).fit(X, groups)
    np.testing.assert_array_equal(a.centroids_, b.centroids_)
    assert len(a.labels_) == 800
    for blob in range(8):  # well-separated blobs are still recovered from 80 points per group
        assert len(set(a.labels_[truth == blob])) == 1
    with pytest.raises(SpadeInputError, match="NaN"):
        bad = X.copy()
        bad[799] = np.nan  # outside every subsample is still caught when labelling
        TwoStageClustering(**kw).fit(bad, groups)
