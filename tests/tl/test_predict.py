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
        assert np.asarray(pred.X).min() >= 0  # log1p of counts: clipped at 0
    # by default the maps show the genes the head predicts best (its cross-validated r), coloured
    from spade_st._validation import DataWarning

    with pytest.warns(DataWarning, match="fitted on Breast; pass --organ"):  # slides of unknown organ: one caveat
        assert main([*args, "--pixel-size-um", "0.5", "--out", str(tmp_path / "best")]) == 0
    err = capsys.readouterr().err
    meta = json.loads((her2st_model / "predictor.json").read_text())
    r = np.array([np.nan if v is None else v for v in meta["cv_r"]])
    best = [meta["genes"][i] for i in np.argsort(-np.nan_to_num(r, nan=-1), kind="stable")[:4]]
    assert f"mapped {best[0]} (CV r {np.nanmax(r):.2f})" in err
    with pytest.warns(DataWarning, match=r"fitted on Breast only; cmu-1-small-region \(Skin\)"):
        main([*args, "--organ", "Skin", "--out", str(tmp_path / "skin")])
    if np.nanmax(r) >= 0.1:
        for f in files:
            assert _coloured_share(tmp_path / "best" / f"{f.stem}_expression.png") > 0.02, f.stem


def test_predicted_h5ad_is_scanpy_ready(her2st_model, tmp_path, capsys):
    """uns['spatial'] that sc.pl.spatial draws, obs with tile size and tissue fraction, var with the head's r,
    uns with model path and sha256; gene symbols in their own case."""
    sc = pytest.importorskip("scanpy")
    import matplotlib

    matplotlib.use("Agg")
    slide = require(WSI_SMALL / "cmu-1-small-region.svs")
    feats = tmp_path / "wf"
    assert main(["extract-wsi", "--wsi", str(slide), "--out", str(feats), "--device", "cpu"]) == 0
    f = feats / "efficientnet_lite0" / "cmu-1-small-region.h5"
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                "--model",
                str(her2st_model),
                "--features",
                str(f.parent),
                "--wsi",
                str(slide),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    pred = ad.read_h5ad(out / "cmu-1-small-region.h5ad")
    lib = pred.uns["spatial"]["cmu-1-small-region"]
    assert lib["images"]["hires"].ndim == 3 and 0 < lib["scalefactors"]["tissue_hires_scalef"] < 1
    assert (pred.obs["tissue_fraction"] >= 0.25).all() and pred.obs["tile_size"].iloc[0] == pytest.approx(
        224 * 0.5 / 0.499
    )
    meta = json.loads((her2st_model / "predictor.json").read_text())
    got = pred.var["cv_r"].to_numpy()
    want = np.array([np.nan if v is None else v for v in meta["cv_r"]], np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert pred.uns["spade_prediction"]["model"] == str(her2st_model)
    assert len(pred.uns["spade_prediction"]["model_sha256"]) == 64
    fig = sc.pl.spatial(pred, color=pred.var_names[0], library_id="cmu-1-small-region", show=False, return_fig=True)
    assert fig is not None
    assert any(g != g.upper() for g in pred.var_names) or all(g == g.upper() for g in meta["genes"])


def test_predict_refuses_nan_rows_and_empty_files(her2st_model, her2st_features, tmp_path, capsys):
    from spade_st.io.features import FeatureSet, write_features

    fs = read_features(her2st_features / "C4.h5")
    nan = fs.features.copy()
    nan[3] = np.nan
    bad = tmp_path / "nan" / "C4.h5"
    write_features(bad, FeatureSet(features=nan, coords=fs.coords, barcode=fs.barcode, attrs=fs.attrs))
    empty = tmp_path / "empty" / "blank.h5"
    write_features(
        empty, FeatureSet(features=np.zeros((0, nan.shape[1]), np.float32), coords=np.zeros((0, 2)), attrs=fs.attrs)
    )
    for path, want in ((bad, "1 of 184 feature rows hold NaN"), (empty, "has no tiles")):
        out = tmp_path / f"o_{path.parent.name}"
        assert main(["predict", "--model", str(her2st_model), "--features", str(path), "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert want in err and err.count("\n") == 1 and not out.exists()
    emb = tmp_path / "emb"
    assert main(["embed", "--model", str(her2st_model), "--features", str(bad), "--out", str(emb)]) == 1
    assert "NaN" in capsys.readouterr().err and not (emb / "C4.h5").exists()


def test_embed_takes_a_file_and_checks_the_encoder(her2st_model, her2st_features, tmp_path, capsys):
    from spade_st import read_features as read_as_adata

    emb = tmp_path / "emb"
    assert (
        main(["embed", "--model", str(her2st_model), "--features", str(her2st_features / "C4.h5"), "--out", str(emb)])
        == 0
    )
    a = read_as_adata(emb / "C4.h5")  # an embedding file: X_spade, tile centres from the copied geometry
    assert "X_spade" in a.obsm and "X_efficientnet_lite0" not in a.obsm
    fs = read_features(her2st_features / "C4.h5")
    src = read_as_adata(her2st_features / "C4.h5")
    assert src.uns["spade"]["tile_size"] > 0  # the feature file gives centres ...
    np.testing.assert_allclose(a.obsm["spatial"], src.obsm["spatial"])  # ... and so does its embedding file
    conch = tmp_path / "features_conch_v15"
    conch.mkdir()
    import h5py

    with h5py.File(conch / "C4.h5", "w") as f:  # TRIDENT layout: no encoder attribute, the folder names it
        f["features"] = fs.features
        f["coords"] = fs.coords
    assert main(["embed", "--model", str(her2st_model), "--features", str(conch), "--out", str(tmp_path / "e2")]) == 1
    err = capsys.readouterr().err
    assert "conch_v15" in err and "features_conch_v15/" in err and not (tmp_path / "e2").exists()
    assert (
        main(["embed", "--model", str(her2st_model), "--features", str(tmp_path / "nowhere"), "--out", str(emb)]) == 1
    )


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
    head = json.loads((old / "predictor.json").read_text())
    assert len(head["cv_r"]) == 2 and head["info"]["alpha_criterion"] == "held-out mean squared error"


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


def test_predict_view_writes_the_viewer_with_routing(her2st_model, her2st_root, her2st_features, tmp_path, capsys):
    """``predict --view``: the maps, then the viewer of the slide, routed by the model on the predicted spots."""
    view = tmp_path / "view"
    args = ["predict", "--model", str(her2st_model), "--features", str(her2st_features / "A1.h5")]
    args += ["--wsi", str(her2st_root / "wsis" / "A1.tif"), "--out", str(tmp_path / "maps"), "--view", str(view)]
    assert main(args) == 0
    page = view / "A1" / "index.html"
    assert page.is_file() and (view / "A1" / "data" / "routing.js").is_file()
    assert "routing" in page.read_text() and 'src="http' not in page.read_text()
    levels = sorted(int(p.name) for p in (view / "A1" / "tiles").iterdir() if p.name.isdigit())
    assert levels == list(range(len(levels))) and len(levels) >= 4  # one tile at level 0 up to 2000 px
    done = json.loads((view / "A1" / "tiles" / str(levels[-1]) / "done.json").read_text())
    assert done  # the last (full-resolution) level is recorded as finished
    no_wsi = ["predict", "--model", str(her2st_model), "--features", str(her2st_features / "A1.h5")]
    assert main([*no_wsi, "--out", str(tmp_path / "m2"), "--view", str(tmp_path / "v2")]) == 1
    assert "--view draws the slides: pass --wsi" in capsys.readouterr().err
    assert not (tmp_path / "m2").exists()  # refused before predicting
