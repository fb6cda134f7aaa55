"""``spade-st predict``: expression maps from a model folder alone, on real slides and a held-out her2st section."""

from __future__ import annotations

import json
import re
import shutil

import anndata as ad
import numpy as np
import pytest
from PIL import Image

from spade_st.cli import main
from spade_st.io.features import read_features

from conftest import WSI_SMALL, require


@pytest.fixture(scope="module")
def her2st_model(her2st_root, her2st_features, tmp_path_factory):
    """A model trained on C2 + C3 (C4 of the same patient held out; A1, B4 excluded), copied to a bare folder."""
    run = tmp_path_factory.mktemp("pred") / "run"
    args = ["pretrain", "--config", "her2st", "--data", str(her2st_root), "--features", str(her2st_features)]
    assert main([*args, "--out", str(run), "--exclude", "C4", "A1", "B4", "--epochs", "5", "--device", "cpu"]) == 0
    bare = run.parent / "model"
    bare.mkdir()
    for name in ("model.safetensors", "config.json", "predictor.safetensors", "predictor.json"):
        shutil.copy(run / name, bare / name)  # no store, no data: predict needs only these
    return bare


def _coloured_share(png) -> float:
    """Share of pixels with a saturated colour (the viridis map), i.e. not white, grey or the pale H&E."""
    with Image.open(png) as im:
        hsv = np.asarray(im.convert("RGB").convert("HSV"), float)
    return float(((hsv[..., 1] > 120) & (hsv[..., 2] > 60)).mean())


def test_predict_held_out_section_prints_pearson(her2st_model, her2st_root, her2st_features, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["predict", "--model", str(her2st_model), "--features", str(her2st_features / "C4.h5")]
    assert (
        main([*args, "--wsi", str(her2st_root / "wsis" / "C4.tif"), "--data", str(her2st_root), "--out", str(out)]) == 0
    )
    err = capsys.readouterr().err
    r = float(re.search(r"mean Pearson r vs measured over \d+ genes: (-?[\d.]+)", err).group(1))
    assert r > 0.02  # above chance on a held-out section of the same patient
    pred = ad.read_h5ad(out / "C4.h5ad")
    fs = read_features(her2st_features / "C4.h5")
    assert list(pred.obs_names) == list(fs.barcode)  # spots named by barcode
    head = json.loads((her2st_model / "predictor.json").read_text())
    assert list(pred.var_names) == head["genes"] and np.isfinite(pred.X).all()
    assert "in-sample" not in err  # C4 was held out of the model and its head
    assert "(within-patient: same patient (C) as training sample C2)" in err  # ... but not its patient
    assert _coloured_share(out / "C4_expression.png") > 0.05


def test_leakage_guard_refuses_scoring_a_training_section(her2st_model, her2st_root, her2st_features, tmp_path, capsys):
    """C2 trained the model: its measured-vs-predicted r is refused before anything is written, unless asked."""
    out = tmp_path / "out"
    args = ["predict", "--model", str(her2st_model), "--features", str(her2st_features / "C2.h5")]
    assert main([*args, "--data", str(her2st_root), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "C2: trained on it" in err and "--allow-train-overlap" in err
    assert not out.exists()
    assert main([*args, "--data", str(her2st_root), "--out", str(out), "--allow-train-overlap"]) == 0
    assert "(in-sample, not held out: trained on it)" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0  # no --data: nothing is scored, nothing refused


def test_predict_whole_slides_from_model_folder(her2st_model, tmp_path, capsys):
    slides = [require(WSI_SMALL / "cmu-1-small-region.svs"), WSI_SMALL / "tcga-cr-7395-01a-01-ts1.svs"]
    feats = tmp_path / "wf"
    ew = ["extract-wsi", "--wsi", str(slides[0]), "--wsi", str(slides[1]), "--pixel-size-um", "0.5"]
    assert main([*ew, "--out", str(feats), "--device", "cpu"]) == 0
    files = sorted((feats / "efficientnet_lite0").glob("*.h5"))
    out = tmp_path / "out"
    head = json.loads((her2st_model / "predictor.json").read_text())["genes"]
    genes = [head[0].lower(), head[1]]  # matched case-insensitively
    args = ["predict", "--model", str(her2st_model), "--features", *map(str, files), "--wsi", *map(str, slides)]
    assert main([*args, "--pixel-size-um", "0.5", "--genes", *genes, "--out", str(out)]) == 0
    for f in files:
        pred = ad.read_h5ad(out / f"{f.stem}.h5ad")
        n = len(read_features(f))
        assert pred.shape == (n, 2) and list(pred.var_names) == head[:2]
        assert pred.obs_names[0] == "tile_0" and pred.obsm["spatial"].shape == (n, 2)  # every tissue tile
        assert np.asarray(pred.X).std(0).min() > 0  # the tiles differ
        assert _coloured_share(out / f"{f.stem}_expression.png") > 0.05, f.stem


def test_model_without_head_says_how_to_add_one(her2st_model, her2st_root, her2st_features, tmp_path, capsys):
    old = tmp_path / "old"
    old.mkdir()
    for name in ("model.safetensors", "config.json"):
        shutil.copy(her2st_model / name, old / name)
    args = ["predict", "--model", str(old), "--features", str(her2st_features / "C4.h5"), "--out", str(tmp_path / "o")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "no expression head" in err and "spade-st fit-predictor" in err and not (tmp_path / "o").exists()
    fp = ["fit-predictor", "--model", str(old), "--data", str(her2st_root), "--features", str(her2st_features)]
    assert main([*fp, "--genes", "ERBB2", "KRT19"]) == 0
    assert main(args) == 0
    assert list(ad.read_h5ad(tmp_path / "o" / "C4.h5ad").var_names) == ["ERBB2", "KRT19"]


def test_trident_feature_file(her2st_model, her2st_features, tmp_path, capsys):
    """A TRIDENT-style file (no encoder attribute, no barcodes, tile geometry on the coords dataset) predicts the
    same expression as our own file of the same features, with tile centres from TRIDENT's magnifications."""
    import h5py

    ours = read_features(her2st_features / "C4.h5")
    corners = np.asarray(ours.coords, np.float64)
    trident = tmp_path / "C4.h5"
    with h5py.File(trident, "w") as f:
        f.create_dataset("features", data=ours.features)
        c = f.create_dataset("coords", data=corners.astype(np.int64))
        c.attrs.update(
            {"patch_size": 224, "level0_magnification": 10 / 0.687, "target_magnification": 20, "name": "C4"}
        )
    args = ["predict", "--model", str(her2st_model), "--features", str(trident)]
    assert main([*args, "--out", str(tmp_path / "a")]) == 1
    assert "pass --encoder" in capsys.readouterr().err
    assert main([*args, "--encoder", "efficientnet_lite0", "--out", str(tmp_path / "a")]) == 0
    assert (
        main(
            [
                "predict",
                "--model",
                str(her2st_model),
                "--features",
                str(her2st_features / "C4.h5"),
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    a, b = ad.read_h5ad(tmp_path / "a" / "C4.h5ad"), ad.read_h5ad(tmp_path / "b" / "C4.h5ad")
    np.testing.assert_allclose(a.X, b.X, rtol=1e-5, atol=1e-6)
    assert a.obs_names[0] == "tile_0"
    np.testing.assert_allclose(a.obsm["spatial"], corners + 224 * 0.5 / 0.687 / 2, rtol=1e-6)


def test_head_of_another_model_is_refused(her2st_model, tmp_path):
    from spade_st._validation import SpadeInputError
    from spade_st.experts import SpadeModel

    other = tmp_path / "other"
    shutil.copytree(her2st_model, other)
    raw = bytearray((other / "model.safetensors").read_bytes())
    raw[-4:] = b"\x00\x00\x80\x3f"  # one weight changed: another model
    (other / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(SpadeInputError, match="fitted for another model"):
        SpadeModel.from_pretrained(other)
    shutil.copy(her2st_model / "model.safetensors", other / "model.safetensors")
    (other / "predictor.safetensors").write_bytes((other / "predictor.safetensors").read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(SpadeInputError, match=r"not the file predictor\.json was written with"):
        SpadeModel.from_pretrained(other)


def test_fit_predictor_refuses_unknown_genes(her2st_model, her2st_root, her2st_features, tmp_path, capsys):
    fp = ["fit-predictor", "--model", str(her2st_model), "--data", str(her2st_root), "--features", str(her2st_features)]
    before = (her2st_model / "predictor.json").read_bytes()
    assert main([*fp, "--genes", "ERBB2", "NOTAGENE1"]) == 1
    assert "'NOTAGENE1'" in capsys.readouterr().err
    assert (her2st_model / "predictor.json").read_bytes() == before
