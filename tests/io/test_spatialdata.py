"""SpatialData out and in with the real packages: a her2st section to a zarr store and back, unchanged, through
the README's own code; a Visium sample as spatialdata-io itself reads it; clear refusals."""

from __future__ import annotations

import shlex

import numpy as np
import pytest

pytest.importorskip("spatialdata", reason="needs the [scverse] extra: pip install 'spade-st[scverse]'")

from spade_st._validation import SpadeInputError
from spade_st.cli import main
from spade_st.io import read_hest
from spade_st.io.features import read_features
from spade_st.io.wsi import load_full_image

from conftest import readme_blocks, with_values

SECTION = "A1"


def test_readme_block_writes_a_store_spatialdata_reads(her2st_root, her2st_features, tmp_path, capsys, monkeypatch):
    code = with_values(readme_blocks("### With SpatialData", "python")[0], ROOT=her2st_root, SAMPLE=SECTION, FEATS=her2st_features)
    ns: dict = {}
    monkeypatch.chdir(tmp_path)  # the block writes A1.zarr where it runs; its lazy arrays read from there
    exec(compile(code, "README.md (With SpatialData)", "exec"), ns)
    back = ns["back"]
    s = read_hest(her2st_root, ids=[SECTION])[0]
    table = back.tables["table"]
    assert (table.X != s.adata.X).nnz == 0 and list(table.obs["barcode"]) == list(s.adata.obs_names)
    fs = read_features(her2st_features / f"{SECTION}.h5")
    pos = np.asarray([list(fs.barcode).index(b) for b in table.obs["barcode"]])
    np.testing.assert_array_equal(table.obsm["X_efficientnet_lite0"], fs.features[pos])
    spots = back.shapes[f"{SECTION}_spots"]
    np.testing.assert_allclose(np.column_stack([spots.geometry.x, spots.geometry.y]), s.adata.obsm["spatial"])
    np.testing.assert_allclose(spots["radius"], 100.0 / s.pixel_size_um / 2)  # her2st spots: 100 µm across
    from spatialdata.transformations import get_transformation

    um = get_transformation(spots, to_coordinate_system="um").to_affine_matrix(("x", "y"), ("x", "y"))
    np.testing.assert_allclose(np.diag(um)[:2], s.pixel_size_um)
    image, _ = load_full_image(s.layout.wsi(SECTION))
    level0 = back.images[f"{SECTION}_image"]["scale0"]["image"].values.transpose(1, 2, 0)
    np.testing.assert_array_equal(level0, image)
    assert "346 × 15045" in capsys.readouterr().out.replace(" x ", " × ")  # the README's print


def test_section_out_and_back_through_the_readme_commands(her2st_root, her2st_features, tmp_path):
    lines = [ln for ln in readme_blocks("### With SpatialData", "bash")[0].splitlines() if ln.startswith("spade-st")]
    sub = {"runs/her2st/data": her2st_root, "runs/her2st/features/efficientnet_lite0": her2st_features}
    sub |= {"A1.zarr": tmp_path / "A1.zarr", "back": tmp_path / "back"}
    for ln in lines[:2]:  # export, then convert back
        assert main([str(sub.get(a, a)) for a in shlex.split(ln)[1:]]) == 0
    a = read_hest(her2st_root, ids=[SECTION])[0]
    b = read_hest(tmp_path / "back", ids=[SECTION])[0]
    assert (a.adata.X != b.adata.X).nnz == 0
    assert list(a.adata.obs_names) == list(b.adata.obs_names) and list(a.adata.var_names) == list(b.adata.var_names)
    np.testing.assert_allclose(a.adata.obsm["spatial"], b.adata.obsm["spatial"], atol=1e-9)
    assert a.pixel_size_um == pytest.approx(b.pixel_size_um, rel=1e-9)
    assert b.meta["spot_diameter"] == pytest.approx(100.0) and b.patient == "A"
    np.testing.assert_array_equal(load_full_image(a.layout.wsi(SECTION))[0], load_full_image(b.layout.wsi(SECTION))[0])


def test_existing_store_and_bad_stores_are_refused(her2st_root, tmp_path, capsys):
    from spade_st.io import to_spatialdata

    (tmp_path / "x.zarr").mkdir()
    with pytest.raises(SpadeInputError, match="exists; pass overwrite=True"):
        to_spatialdata(data=her2st_root, sample_id=SECTION, out=tmp_path / "x.zarr")
    with pytest.raises(SpadeInputError, match="give either data= and sample_id="):
        to_spatialdata(data=her2st_root)
    args = ["convert", "spatialdata", "--zarr", str(tmp_path / "none.zarr"), "--sample-id", "S", "--out", str(tmp_path)]
    assert main(args) == 1
    assert "is not a SpatialData zarr store" in capsys.readouterr().err
