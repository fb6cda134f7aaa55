"""``spade-st embed`` and ``fit-predictor`` at their edges: one-line errors before any work, torchrun sharding,
heads that grow instead of being replaced."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spade_st.cli import main
from spade_st.io.features import read_features

from conftest import extract_cli, run_cli


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 3-expert random_cnn model (with its head) on 6 synthetic samples, and their features."""
    from spade_st.datasets import synthetic

    root = tmp_path_factory.mktemp("emb") / "root"
    synthetic(out=root, samples=6, spots=40, genes=60, seed=5, progress=False)
    feats = root.parent / "feats"
    assert extract_cli(root, feats, "random_cnn", "--device", "cpu") == 0
    model = root.parent / "model"
    args = ["pretrain", "--data", root, "--features", feats / "random_cnn", "--out", model, "--k1", "3"]
    args += ["--experts", "3", "--epochs", "2", "--batch-size", "16", "--device", "cpu"]
    assert main([str(a) for a in args]) == 0
    return root, feats / "random_cnn", model


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--device", "gpu"], "--device 'gpu' is not a device"),
        (["--topk", "-1"], "--topk -1: this model has"),
        (["--topk", "50"], "--topk 50: this model has"),
        pytest.param(
            ["--device", "cuda"],
            "no CUDA GPU is visible",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here"),
        ),
    ],
)
def test_embed_bad_options_are_one_line_before_any_work(small, tmp_path, capsys, extra, needle):
    _, feats, model = small
    out = tmp_path / "emb"
    assert main(["embed", "--model", str(model), "--features", str(feats), "--out", str(out), *extra]) == 1
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()  # nothing written, not even an empty folder


def test_report_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notarun").mkdir()
    assert main(["report", str(tmp_path / "notarun")]) == 1
    assert "is not a run folder" in capsys.readouterr().err
    assert not (tmp_path / "notarun" / "report.html").exists()


@pytest.mark.slow
def test_torchrun_embed_writes_each_file_once(small, tmp_path):
    _, feats, model = small
    out = tmp_path / "emb"
    r = run_cli(["embed", "--model", model, "--features", feats, "--out", out, "--device", "cpu"], nproc=2, port=29531)
    assert r.returncode == 0, r.stderr[-2000:]
    files = sorted(out.glob("*.h5"))
    assert [read_features(f).attrs["rank"] for f in files] == [0, 1, 0, 1, 0, 1]  # round-robin, each once
    assert r.stdout.count("embedding file(s)") == 1  # one summary, from rank 0
    assert "6 embedding file(s)" in r.stdout
    single = tmp_path / "one"
    assert (
        main(["embed", "--model", str(model), "--features", str(feats), "--out", str(single), "--device", "cpu"]) == 0
    )
    for f in files:
        np.testing.assert_allclose(read_features(f).features, read_features(single / f.name).features, atol=1e-5)


def test_fit_predictor_adds_genes_to_the_head(small, tmp_path, capsys):
    import shutil

    root, feats, model = small
    m = tmp_path / "m"
    shutil.copytree(model, m)
    import anndata as ad

    names = list(ad.read_h5ad(next((root / "st").glob("*.h5ad"))).var_names)
    fp = ["fit-predictor", "--model", str(m), "--data", str(root), "--features", str(feats)]
    assert main([*fp, "--genes", *names[:3], "--replace"]) == 0
    assert json.loads((m / "predictor.json").read_text())["genes"] == names[:3]
    capsys.readouterr()
    assert main([*fp, "--genes", *[g.lower() for g in names[2:5]]]) == 0  # any case; one already in the head
    assert "2 gene(s) added to the head's 3" in capsys.readouterr().out
    assert json.loads((m / "predictor.json").read_text())["genes"] == names[:5]  # as the samples spell them
    assert main([*fp, "--genes", "ENSG00000141736", names[0], "--replace"]) == 1
    assert "mixes 1 Ensembl ids" in capsys.readouterr().err


def test_embeddings_open_with_a_trident_layout_reader(small, tmp_path):
    """A loader written from TRIDENT's documented layout (features + coords, geometry on coords) reads SPADE
    embeddings of slide tiles as it reads UNI's features."""
    import h5py

    from conftest import WSI_SMALL, require

    _, _, model = small
    slide = require(WSI_SMALL / "cmu-1-small-region.svs")
    feats = tmp_path / "job"
    assert main(["extract-wsi", "--wsi", str(slide), "--encoder", "random_cnn", "--out", str(feats)]) == 0
    out = tmp_path / "job" / "20x_224px_0px_overlap" / "features_spade-random_cnn"  # placed in a TRIDENT tree
    assert main(["embed", "--model", str(model), "--features", str(feats / "random_cnn"), "--out", str(out)]) == 0

    def trident_load(path):  # what TRIDENT/Patho-Bench loaders do: no spade-st code
        with h5py.File(path, "r") as f:
            return f["features"][:], f["coords"][:], dict(f["coords"].attrs), f["features"].attrs["encoder"]

    x, coords, attrs, enc = trident_load(out / "cmu-1-small-region.h5")
    src = read_features(feats / "random_cnn" / "cmu-1-small-region.h5")
    assert (
        x.shape == (len(src), json.loads((model / "config.json").read_text())["out_dim"]) and enc == "spade-random_cnn"
    )
    np.testing.assert_array_equal(coords, src.coords)  # level-0 top-left, as TRIDENT's
    assert isinstance(attrs["patch_size_level0"], np.integer) and attrs["patch_size_level0"] == round(224 * 0.5 / 0.499)
    assert attrs["target_magnification"] == 20 and attrs["patch_size"] == 224 and attrs["name"] == "cmu-1-small-region"


def test_trident_folder_names_are_read_as_our_encoder_names():
    from spade_st.io.features import feature_encoder

    assert feature_encoder("job/features_uni_v1/s.h5", {}) == "uni"  # TRIDENT's name for UNI
    assert feature_encoder("job/features_conch_v15/s.h5", {}) == "conch_v15"  # not ours: named as it is
    assert feature_encoder("job/features_uni_v1/s.h5", {"encoder": "virchow2"}) == "virchow2"  # the file wins
    assert feature_encoder("job/plain/s.h5", {}) is None


def test_trident_encoder_attribute_names_map_too():
    from spade_st.io.features import feature_encoder

    assert feature_encoder("job/features_uni_v1/s.h5", {"encoder": "uni_v1"}) == "uni"  # as TRIDENT writes it
    assert feature_encoder("job/x/s.h5", {"encoder": "uni_v1"}, "uni") == "uni"  # the flag agrees once mapped
