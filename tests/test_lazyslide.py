"""The LazySlide plug-in with the real packages: LazySlide's own tiling and feature extraction of a real slide
with a local spade-st encoder, then a SPADE model, against ``spade-st embed`` / ``predict`` on the same tiles."""

from __future__ import annotations

import os
import shlex
import shutil

import anndata as ad
import h5py
import numpy as np
import pytest

pytest.importorskip("lazyslide", reason="needs the [scverse] extra: pip install 'spade-st[scverse]'")

from spade_st._validation import SpadeInputError
from spade_st.cli import main

from conftest import WSI_SMALL, extract_cli, readme_blocks, require, with_values

SVS = WSI_SMALL / "cmu-1-small-region.svs"
ENC = "efficientnet_lite0"


@pytest.fixture(scope="module")
def lite0_model(synthetic_root, tmp_path_factory):
    """A two-expert model with an expression head on real efficientnet_lite0 features of the synthetic root."""
    d = tmp_path_factory.mktemp("lz")
    assert extract_cli(synthetic_root, d / "f") == 0
    args = ["pretrain", "--data", str(synthetic_root), "--features", str(d / "f" / ENC), "--out", str(d / "model")]
    assert main([*args, "--k1", "2", "--experts", "2", "--epochs", "2", "--batch-size", "16", "--device", "cpu"]) == 0
    return d / "model"


@pytest.fixture(scope="module")
def readme_run(lite0_model, tmp_path_factory):
    """The README's LazySlide block, run as written on a real slide (only its three paths are the test's)."""
    d = tmp_path_factory.mktemp("lzrun")
    assert main(["extract-wsi", "--wsi", str(require(SVS)), "--encoder", ENC, "--out", str(d / "feats")]) == 0
    feats = d / "feats" / ENC / f"{SVS.stem}.h5"
    code = with_values(readme_blocks("### With LazySlide", "python")[0], SLIDE=SVS, MODEL=lite0_model, FEATURES=feats)
    ns: dict = {}
    cwd = os.getcwd()
    os.chdir(d)
    try:
        exec(compile(code, "README.md (With LazySlide)", "exec"), ns)
    finally:
        os.chdir(cwd)
    return d, ns


def _cli_outputs(model, h5, out):
    """``spade-st embed`` and ``spade-st predict`` on one feature file: (embeddings, expert weights, prediction)."""
    assert main(["embed", "--model", str(model), "--features", str(h5), "--out", str(out / "emb")]) == 0
    assert main(["predict", "--model", str(model), "--features", str(h5), "--out", str(out / "pred")]) == 0
    with h5py.File(out / "emb" / h5.name) as f:
        z, w = f["features"][()], f["expert_weights"][()]
    return z, w, ad.read_h5ad(out / "pred" / f"{h5.stem}.h5ad")


def test_readme_block_writes_the_tables(readme_run):
    import spatialdata as sd

    d, ns = readme_run
    wsi = ns["wsi"]
    n = len(wsi.shapes["tiles"])
    assert n > 10
    for key, width in (("efficientnet_lite0_tiles", 1280), ("spade_tiles", 256), ("spade_experts_tiles", 2)):
        assert wsi.tables[key].shape == (n, width), key
    genes = wsi.tables["spade_genes_tiles"]
    assert genes.n_obs == n and genes.n_vars == 60 and (genes.X >= 0).all()  # clipped at 0, like predict
    on_disk = sd.read_zarr(d / "slide.zarr")
    np.testing.assert_array_equal(on_disk.tables["spade_genes_tiles"].X, genes.X)


def test_tables_equal_spade_st_embed_and_predict(readme_run, lite0_model, tmp_path):
    d, ns = readme_run
    wsi = ns["wsi"]
    h5 = tmp_path / f"{SVS.stem}.h5"
    shutil.copy(d / "lazyslide_feats" / "slide.h5", h5)
    z, w, pred = _cli_outputs(lite0_model, h5, tmp_path)
    np.testing.assert_allclose(wsi.tables["spade_tiles"].X, z, atol=1e-5)
    np.testing.assert_allclose(wsi.tables["spade_experts_tiles"].X, w, atol=1e-5)
    genes = wsi.tables["spade_genes_tiles"]
    assert list(genes.var_names) == list(pred.var_names)
    np.testing.assert_allclose(genes.X, pred.X, atol=1e-5)
    # LazySlide's tiles are top-left corners; spade-st's obsm['spatial'] holds the centres
    top_left = wsi.shapes["tiles"].bounds[["minx", "miny"]].to_numpy()
    np.testing.assert_allclose(pred.obsm["spatial"], top_left + wsi.tile_spec("tiles").base_width / 2, atol=1e-6)
    assert len(top_left) == 38  # the README's count
    # the head's per-gene CV r and the model's provenance travel with LazySlide's gene table
    np.testing.assert_array_equal(genes.var["cv_r"], pred.var["cv_r"])
    assert genes.uns["spade_prediction"]["model_sha256"] == pred.uns["spade_prediction"]["model_sha256"] != ""


def test_encoder_is_spade_st_preprocessing_on_lazyslide_tiles(readme_run):
    """SpadeEncoder hands LazySlide's raw tiles to the spade-st encoder, which resizes and normalises them."""
    from spade_st.encoders import create_encoder

    _, ns = readme_run
    wsi = ns["wsi"]
    tiles = np.stack([wsi.ds.tile_images(tile_key="tiles")[i]["image"] for i in range(4)])
    assert tiles.dtype == np.uint8 and tiles.shape[1:] == (224, 224, 3)
    ours = create_encoder(ENC, device="cpu").eval()(tiles).numpy()
    np.testing.assert_allclose(wsi.tables["efficientnet_lite0_tiles"].X[:4], ours, atol=1e-5)


def test_extract_wsi_output_opens_as_wsidata(readme_run, lite0_model, tmp_path):
    d, ns = readme_run
    ours = ns["ours"]
    h5 = d / "feats" / ENC / f"{SVS.stem}.h5"
    with h5py.File(h5) as f:
        coords = f["coords"][()]
    np.testing.assert_allclose(ours.shapes["tiles"].bounds[["minx", "miny"]].to_numpy(), coords)
    z, _, pred = _cli_outputs(lite0_model, h5, tmp_path)
    assert ours.tables["spade_genes_tiles"].n_obs == len(coords) == 54  # the README's count
    np.testing.assert_allclose(ours.tables["spade_genes_tiles"].X, pred.X, atol=1e-5)
    np.testing.assert_allclose(ours.tables["spade_tiles"].X, z, atol=1e-5)


def test_wrong_tiles_and_bad_options_are_refused(readme_run, lite0_model):
    import lazyslide as zs

    import spade_st.lazyslide as spl

    _, ns = readme_run
    wsi = ns["wsi"]
    zs.pp.tile_tissues(wsi, 256, mpp=0.5, key_added="big")
    with pytest.raises(SpadeInputError, match=r"256x256 px .*tile_tissues\(wsi, 224, mpp=0.5\)"):
        spl.predict(wsi, lite0_model, tile_key="big")
    with pytest.raises(SpadeInputError, match="output must be one of"):
        spl.Spade(lite0_model, output="genez")
    with pytest.raises(SpadeInputError, match="NOT_A_GENE"):
        spl.Spade(lite0_model, genes=["NOT_A_GENE"])
    assert spl.Spade(lite0_model).features_model_name == ENC
    assert spl.lazyslide_name("uni2-h") == "uni2" and spl.spade_name("uni2") == "uni2-h"


def test_readme_export_of_a_predicted_slide(readme_run, lite0_model, tmp_path):
    """The README's ``export spatialdata --prediction`` line: tiles as squares of their real size."""
    import spatialdata as sd

    d, _ = readme_run
    h5 = d / "feats" / ENC / f"{SVS.stem}.h5"
    assert main(["predict", "--model", str(lite0_model), "--features", str(h5), "--wsi", str(SVS), "--out", str(tmp_path)]) == 0
    line = next(ln for ln in readme_blocks("### With SpatialData", "bash")[0].splitlines() if "--prediction" in ln)
    sub = {"preds/slide.h5ad": tmp_path / f"{SVS.stem}.h5ad", "slide.svs": SVS, "slide.zarr": tmp_path / "s.zarr"}
    args = [str(sub.get(a, a)) for a in shlex.split(line)[1:]]
    assert main([*args, "--features", str(h5)]) == 0
    s = sd.read_zarr(tmp_path / "s.zarr")
    pred = ad.read_h5ad(tmp_path / f"{SVS.stem}.h5ad")
    table = s.tables["predicted"]
    np.testing.assert_array_equal(table.X, pred.X)
    assert table.obsm["X_efficientnet_lite0"].shape == (pred.n_obs, 1280)
    tiles = s.shapes[f"{SVS.stem}_tiles"].bounds
    side = float(pred.obs["tile_size"].iloc[0])
    np.testing.assert_allclose((tiles["maxx"] - tiles["minx"]).to_numpy(), side)
    np.testing.assert_allclose(tiles[["minx", "miny"]].to_numpy() + side / 2, pred.obsm["spatial"])
    from spade_st.io import open_wsi

    other = tmp_path / "other.h5"  # a feature file of other tiles is refused, not matched by row count
    with h5py.File(h5) as f:
        coords = f["coords"][()]
    from spade_st.io.features import FeatureSet, write_features

    write_features(other, FeatureSet(features=np.zeros((len(coords), 3), np.float32), coords=coords + 300, attrs={"encoder": ENC}))
    from spade_st.io import to_spatialdata

    with pytest.raises(SpadeInputError, match="does not hold the predicted tiles"):
        to_spatialdata(prediction=tmp_path / f"{SVS.stem}.h5ad", wsi=SVS, features=[other])
    assert main([*args, "--features", str(h5), "--overwrite"]) == 0  # replaced whole
    assert sd.read_zarr(tmp_path / "s.zarr").tables["predicted"].n_obs == pred.n_obs
    img = s.images[f"{SVS.stem}_image"]["scale0"]["image"]
    with open_wsi(SVS) as slide:
        w, h = slide.dimensions
        np.testing.assert_array_equal(img.values[:, 100:164, 200:264].transpose(1, 2, 0), slide.read_region((200, 100), 0, (64, 64))[..., :3])
    assert img.shape == (3, h, w)


def test_sample_with_its_prediction_to_spatialdata(lite0_model, synthetic_root, tmp_path):
    """A HEST sample with ``predict``'s output on its spots: the predicted table annotates the same circles."""
    from spade_st.io import read_hest, to_spatialdata

    feats = lite0_model.parent / "f" / ENC
    sid = read_hest(synthetic_root)[0].id
    assert main(["predict", "--model", str(lite0_model), "--features", str(feats / f"{sid}.h5"), "--out", str(tmp_path)]) == 0
    pred = ad.read_h5ad(tmp_path / f"{sid}.h5ad")
    shuffled = tmp_path / "shuffled.h5ad"
    pred[::-1].copy().write_h5ad(shuffled)  # rows in another order are put back in the sample's
    s = to_spatialdata(data=synthetic_root, sample_id=sid, prediction=shuffled, features=[feats])
    counts, predicted = s.tables["table"], s.tables["predicted"]
    assert list(predicted.obs_names) == list(counts.obs_names)
    np.testing.assert_array_equal(predicted.X, pred[counts.obs_names].X)
    assert predicted.uns["spatialdata_attrs"]["region"] == counts.uns["spatialdata_attrs"]["region"] == f"{sid}_spots"
    np.testing.assert_array_equal(predicted.obs["spot_id"], counts.obs["spot_id"])


def test_gene_subset_and_a_forced_pixel_size(readme_run, lite0_model, tmp_path):
    """``genes=`` restricts the table; a file extracted at a forced 0.25 µm/px opens with 448 px level-0 tiles."""
    import lazyslide as zs

    import spade_st.lazyslide as spl

    _, ns = readme_run
    wsi = ns["wsi"]
    zs.tl.feature_prediction(wsi, spl.Spade(lite0_model, genes=["KRT18", "EPCAM"]), key_added="two")
    assert list(wsi.tables["two"].var_names) == ["KRT18", "EPCAM"]
    np.testing.assert_array_equal(wsi.tables["two"].X, wsi.tables["spade_genes_tiles"][:, ["KRT18", "EPCAM"]].X)
    args = ["extract-wsi", "--wsi", str(SVS), "--encoder", ENC, "--out", str(tmp_path), "--pixel-size-um", "0.25"]
    assert main([*args, "--force-pixel-size"]) == 0
    h5 = tmp_path / ENC / f"{SVS.stem}.h5"
    forced = spl.open_features(SVS, h5, store=tmp_path / "f.zarr")
    b = forced.shapes["tiles"].bounds
    np.testing.assert_allclose((b["maxx"] - b["minx"]).to_numpy(), 448)  # 224 px at 0.5 µm/px of a 0.25 µm/px slide
    spl.write_features(forced, ENC, tmp_path / "back.h5")
    with h5py.File(h5) as f, h5py.File(tmp_path / "back.h5") as g:
        for k in ("patch_size_level0", "pixel_size_um", "level0_pixel_size_um"):
            assert float(f.attrs[k]) == pytest.approx(float(g.attrs[k]), rel=1e-3), k
