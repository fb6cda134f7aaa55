"""Hostile and broken inputs beyond the readers' table: models, features, tiny samples, links, doctor."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from spade_st._validation import LayoutError, SpadeInputError
from spade_st.cli import main
from spade_st.experts import SpadeConfig, SpadeModel
from spade_st.genes import GenePanel, build_panel


def _model(tmp_path):
    cfg = SpadeConfig(encoder="enc", feature_dim=4, genes=["A", "B"], n_experts=2, k1=1)
    m = SpadeModel(cfg, np.zeros((2, 4)), [0, 1])
    return m.save_pretrained(tmp_path / "m")


def test_model_folder_with_only_a_pickle_is_refused(tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"x": 1}))
    (folder / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        SpadeModel.from_pretrained(folder)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda c: c.replace('"feature_dim": 4', '"feature_dim": 8'), "centroids have shape"),
        (lambda c: c.replace('"n_experts": 2', '"n_experts": 3'), "does not match"),
        (lambda c: c.replace('"encoder": "enc"', '"encoder": "enc", "extra_field": 1'), "unknown field"),
        (lambda c: c[:20], "cannot read"),
    ],
)
def test_mismatched_model_config_is_refused(tmp_path, edit, needle):
    folder = _model(tmp_path)
    cfg = folder / "config.json"
    cfg.write_text(edit(cfg.read_text()))
    with pytest.raises(SpadeInputError, match=needle):
        SpadeModel.from_pretrained(folder)


def test_zero_count_spots_give_zero_input():
    import anndata as ad

    a = ad.AnnData(X=np.array([[0, 0], [3, 1]], dtype=np.int32))
    a.var_names = ["A", "B"]
    x = GenePanel(genes=["A", "B"]).transform(a)
    assert np.isfinite(x).all() and (x[0] == 0).all()


def test_one_spot_sample_cannot_give_hvgs():
    import anndata as ad

    class S:
        id = "one"
        adata = ad.AnnData(X=np.ones((1, 5), dtype=np.int32))

    S.adata.var_names = [f"G{i}" for i in range(5)]
    with pytest.raises(SpadeInputError, match=r"sample one: .*at least 2"):
        build_panel([S()])


def test_nan_features_refused_by_clustering():
    from spade_st.experts import TwoStageClustering

    x = np.random.default_rng(0).normal(size=(50, 4))
    x[3, 1] = np.inf
    with pytest.raises(SpadeInputError, match="NaN or Inf"):
        TwoStageClustering(k1=2, n_experts=2).fit(x)


def test_symlink_outside_root_is_refused(synthetic_root, tmp_path):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(synthetic_root, root)
    outside = tmp_path / "elsewhere.h5ad"
    (root / "st" / "SYN00.h5ad").rename(outside)
    (root / "st" / "SYN00.h5ad").symlink_to(outside)
    from spade_st.io import read_hest

    with pytest.raises(LayoutError, match="outside the data root"):
        read_hest(root)


def test_huge_declared_feature_file_is_not_trusted(tmp_path):
    import h5py

    from spade_st.io.features import COMPLETE, is_finished

    p = tmp_path / "x.h5"
    with h5py.File(p, "w") as f:  # a header claiming 10^12 x 10^6 values, nothing written
        f.create_dataset("features", shape=(10**12, 10**6), dtype="f4", chunks=(1, 1024))
        f.attrs[COMPLETE] = True
        f.attrs["encoder"] = "e"
    assert not is_finished(p, {"encoder": "e"}, n=100, dim=8)


def test_doctor(synthetic_root, capsys):
    rc = main(["doctor", "--data", str(synthetic_root)])
    out = capsys.readouterr().out
    assert rc == 0 and "data root" in out and "3 samples" in out and "free disk" in out
    assert "weights uni" in out and "SPADE_ST_WEIGHTS" in out
