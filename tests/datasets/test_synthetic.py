"""The synthetic demo dataset: deterministic, HEST-valid, and with real image↔expression signal."""

from __future__ import annotations

import numpy as np
import pytest

from spade_st.cli import main
from spade_st.datasets import REGIONS, synthetic
from spade_st.io import read_hest


def test_layout_and_metadata(synthetic_root):
    samples = read_hest(synthetic_root, require_wsi=True)
    assert [s.id for s in samples] == ["SYN00", "SYN01", "SYN02"]
    assert [s.organ for s in samples] == ["Breast", "Breast", "Bowel"]
    assert [s.patient for s in samples] == ["P0", "P0", "P1"]
    for s in samples:
        assert s.adata.n_obs == 60 == len(s.patches)
        assert s.pixel_size_um == 1.0
        assert set(s.adata.obs["label"].cat.categories) == set(REGIONS)
        depth = np.asarray(s.adata.X.sum(1)).ravel()
        assert 1000 < np.median(depth) < 20000  # realistic count depth


def test_deterministic(tmp_path, synthetic_root):
    again = synthetic(out=tmp_path / "again", samples=3, spots=60, genes=60, seed=1, progress=False)
    other = synthetic(out=tmp_path / "other", samples=1, spots=60, genes=60, seed=2, progress=False)
    a, b = read_hest(synthetic_root)[0], read_hest(again)[0]
    np.testing.assert_array_equal(a.adata.X.toarray(), b.adata.X.toarray())
    np.testing.assert_array_equal(a.patches.read(), b.patches.read())
    c = read_hest(other)[0]
    assert not np.array_equal(a.patches.read(), c.patches.read())


def test_genes_follow_regions(synthetic_root):
    s = read_hest(synthetic_root)[0]
    a = s.adata
    x = np.log1p(a.X.toarray() / a.X.sum(1).A * 1e4)
    lab = a.obs["label"].astype(str).to_numpy()
    for region, marker in [("tumour", "EPCAM"), ("stroma", "COL1A1"), ("immune", "PTPRC"), ("adipose", "ADIPOQ")]:
        if (lab == region).sum() < 3:
            continue
        j = list(a.var_names).index(marker)
        assert x[lab == region, j].mean() > x[lab != region, j].mean() + 0.5, (region, marker)


def test_patch_pixels_predict_regions(synthetic_root):
    """Simple colour statistics of the patches separate the regions: the images carry the labels."""
    feats, labs = [], []
    for s in read_hest(synthetic_root):
        p = s.patches.read().astype(np.float32) / 255
        feats.append(np.concatenate([p.mean((1, 2)), p.std((1, 2))], 1))
        labs.append(s.adata.obs["label"].astype(str).to_numpy())
    f, y = np.concatenate(feats), np.concatenate(labs)
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    acc = cross_val_score(LogisticRegression(max_iter=2000), f, y, cv=3).mean()
    majority = max(np.mean(y == r) for r in REGIONS)
    assert acc > majority + 0.15


@pytest.mark.parametrize("bad", [["--samples", "0"], ["--genes", "5"]])
def test_bad_arguments(tmp_path, bad, capsys):
    assert main(["demo-data", "--out", str(tmp_path / "x"), *bad]) == 1
    assert "synthetic data needs" in capsys.readouterr().err
