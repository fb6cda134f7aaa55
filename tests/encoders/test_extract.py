"""``spade-st extract`` on the real her2st root; the features carry real expression signal."""

from __future__ import annotations

import os

import numpy as np

from spade_st.io import read_hest
from spade_st.io.features import read_features

from conftest import extract_cli


def test_features_for_every_spot(her2st_root, her2st_features):
    for s in read_hest(her2st_root):
        fs = read_features(her2st_features / f"{s.id}.h5", require_complete=True)
        assert fs.features.shape == (s.adata.n_obs, 1280)
        assert np.isfinite(fs.features).all()
        assert list(fs.barcode) == list(s.adata.obs_names)
        assert fs.attrs["encoder"] == "efficientnet_lite0" and fs.attrs["weights_sha256"].startswith("57934424")
        assert fs.attrs["patch_size"] == 224 and fs.attrs["pixel_size_um"] == 0.5


def test_rerun_skips_and_identical(her2st_root, her2st_features, tmp_path):
    files = sorted(her2st_features.glob("*.h5"))
    mtimes = [os.stat(f).st_mtime_ns for f in files]
    assert extract_cli(str(her2st_root), str(her2st_features.parent), "efficientnet_lite0") == 0
    assert [os.stat(f).st_mtime_ns for f in files] == mtimes  # verified and skipped
    # a second, independent run (one section) gives identical features
    assert extract_cli(str(her2st_root), str(tmp_path), "efficientnet_lite0", "--ids", "C3", "--batch-size", "64") == 0
    a = read_features(her2st_features / "C3.h5").features
    b = read_features(tmp_path / "efficientnet_lite0" / "C3.h5").features
    np.testing.assert_array_equal(a, b)


def test_truncated_feature_file_is_redone(her2st_root, her2st_features, tmp_path):
    import shutil

    out = tmp_path / "f"
    shutil.copytree(her2st_features, out / "efficientnet_lite0")
    victim = out / "efficientnet_lite0" / "C4.h5"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
    assert extract_cli(str(her2st_root), str(out), "efficientnet_lite0", "--ids", "C4", "--batch-size", "64") == 0
    np.testing.assert_array_equal(read_features(victim).features, read_features(her2st_features / "C4.h5").features)


def test_features_predict_held_out_expression(her2st_root, her2st_features):
    """Ridge from the default encoder's features predicts held-out-section expression (C2-C4, LOSO)."""
    from spade_st.eval.gene_folds import load_section
    from spade_st.eval.genes import mean_pearson, ridge_cv, top_variable_genes

    sections = ["C2", "C3", "C4"]
    samples = {s.id: s for s in read_hest(her2st_root, ids=sections)}
    secs = {sid: load_section(s, her2st_features / f"{sid}.h5", targets=("cp10k",)) for sid, s in samples.items()}
    scores = []
    for test in sections:
        train = [s for s in sections if s != test]
        genes = top_variable_genes([secs[s].targets["cp10k"] for s in train], 50)  # training sections only
        x = np.concatenate([secs[s].features for s in train])
        y = np.concatenate([secs[s].targets["cp10k"][genes].to_numpy() for s in train])
        groups = np.concatenate([[s] * len(secs[s].features) for s in train])
        pred = ridge_cv(x, y, secs[test].features, groups)[0]
        scores.append(mean_pearson(pred, secs[test].targets["cp10k"][genes].to_numpy()))
    print("mean Pearson per held-out section:", dict(zip(sections, np.round(scores, 3), strict=True)))
    assert np.mean(scores) > 0.1
