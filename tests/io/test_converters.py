"""Visium and AnnData converters, built on the real squidpy Visium crop."""

from __future__ import annotations

import json

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest

from spade_st.cli import main
from spade_st.io import read_hest

from conftest import SQUIDPY, require


@pytest.fixture(scope="module")
def crop():
    a = ad.read_h5ad(require(SQUIDPY / "test_data.h5ad"))
    rng = np.random.default_rng(0)
    counts = rng.poisson(np.expm1(np.asarray(a.X.todense() if hasattr(a.X, "todense") else a.X)) * 3).astype(np.int32)
    return a, counts


def _write_10x(path, counts, barcodes, genes):
    import scipy.sparse as sp

    m = sp.csc_matrix(counts.T)
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["data"], g["indices"], g["indptr"] = m.data, m.indices, m.indptr
        g["shape"] = np.array(m.shape)
        g["barcodes"] = np.array([b.encode() for b in barcodes])
        ft = g.create_group("features")
        ft["name"] = np.array([x.encode() for x in genes])
        ft["id"] = np.array([f"ENSG{i:011d}".encode() for i in range(len(genes))])
        ft["feature_type"] = np.array([b"Gene Expression"] * len(genes))


@pytest.fixture
def spaceranger(tmp_path, crop):
    a, counts = crop
    d = tmp_path / "sr"
    (d / "spatial").mkdir(parents=True)
    genes = list(a.var_names)
    genes[1] = genes[0]  # a duplicated symbol, as real 10x references have
    _write_10x(d / "filtered_feature_bc_matrix.h5", counts, list(a.obs_names), genes)
    xy = a.obsm["spatial"]
    pd.DataFrame(
        {
            "barcode": a.obs_names,
            "in_tissue": 1,
            "array_row": np.arange(a.n_obs),
            "array_col": 0,
            "pxl_row_in_fullres": xy[:, 1],
            "pxl_col_in_fullres": xy[:, 0],
        }
    ).to_csv(d / "spatial" / "tissue_positions.csv", index=False)
    lib = next(iter(a.uns["spatial"].values()))
    (d / "spatial" / "scalefactors_json.json").write_text(json.dumps(lib["scalefactors"]))
    return d, counts, genes


def test_visium_converter(tmp_path, spaceranger, crop):
    d, counts, genes = spaceranger
    a, _ = crop
    out = tmp_path / "root"
    rc = main(
        [
            "convert",
            "visium",
            "--spaceranger",
            str(d),
            "--image",
            str(SQUIDPY / "test_img.jpg"),
            "--sample-id",
            "MB1",
            "--organ",
            "Brain",
            "--species",
            "Mus musculus",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    (s,) = read_hest(out, require_wsi=True)
    diam = next(iter(a.uns["spatial"].values()))["scalefactors"]["spot_diameter_fullres"]
    assert s.pixel_size_um == pytest.approx(55.0 / diam)
    assert s.adata.n_obs == 49 and len(s.patches) == 49
    assert s.adata.n_vars == len(set(genes))
    # duplicated symbols are summed
    g0 = genes[0]
    np.testing.assert_array_equal(np.asarray(s.adata[:, g0].X.todense()).ravel(), counts[:, 0] + counts[:, 1])
    np.testing.assert_allclose(s.adata.obsm["spatial"], a.obsm["spatial"])
    assert s.meta["st_technology"] == "Visium" and s.meta["species"] == "Mus musculus"


def test_visium_without_positions_is_clear(tmp_path, spaceranger, capsys):
    d, _, _ = spaceranger
    (d / "spatial" / "tissue_positions.csv").unlink()
    assert (
        main(
            [
                "convert",
                "visium",
                "--spaceranger",
                str(d),
                "--image",
                str(SQUIDPY / "test_img.jpg"),
                "--sample-id",
                "MB1",
                "--out",
                str(tmp_path / "root"),
            ]
        )
        == 1
    )
    assert "tissue_positions" in capsys.readouterr().err


def test_anndata_converter_refuses_lognormalised_then_takes_layer(tmp_path, crop, capsys):
    a, counts = crop
    src = tmp_path / "in.h5ad"
    b = a.copy()
    b.layers["counts"] = counts
    b.write_h5ad(src)
    out = tmp_path / "root"
    base = [
        "convert",
        "anndata",
        "--adata",
        str(src),
        "--image",
        str(SQUIDPY / "test_img.jpg"),
        "--sample-id",
        "MB2",
        "--out",
        str(out),
    ]
    assert main([*base, "--layer", "counts"]) == 1  # the mouse crop does not say its species
    assert "pass --species" in capsys.readouterr().err and not (out / "metadata.csv").exists()
    base += ["--species", "Mus musculus"]
    assert main(base) == 1
    err = capsys.readouterr().err
    assert "not integers" in err and "--layer" in err
    assert not (out / "metadata.csv").exists()
    assert main([*base, "--layer", "counts"]) == 0
    (s,) = read_hest(out)
    assert s.meta["species"] == "Mus musculus"
    np.testing.assert_array_equal(np.asarray(s.adata.X.todense()), counts)
    # pixel size inferred from uns['spatial'] scalefactors (55 µm spot)
    diam = next(iter(a.uns["spatial"].values()))["scalefactors"]["spot_diameter_fullres"]
    assert s.pixel_size_um == pytest.approx(55.0 / diam)


def test_spatialdata_io_visium_store_converts(tmp_path, spaceranger, crop):
    """A Visium sample as spatialdata-io's own reader lays it out (spots in full-resolution pixels, the hires
    image in its own system) converts with the full image, its spot centres and the 55 µm spot's pixel size."""
    sdio = pytest.importorskip("spatialdata_io", reason="needs the [scverse] extra: pip install 'spade-st[scverse]'")
    import shutil

    from PIL import Image

    a, counts = crop
    d, _, _ = spaceranger
    lib = next(iter(a.uns["spatial"].values()))
    f = lib["scalefactors"]["tissue_hires_scalef"]
    with Image.open(SQUIDPY / "test_img.jpg") as im:  # a hires image of this crop at the crop's scale factor
        im.resize((round(im.width * f), round(im.height * f))).save(d / "spatial" / "tissue_hires_image.png")
    shutil.copy(SQUIDPY / "test_img.jpg", d / "full.jpg")
    sdata = sdio.visium(d, dataset_id="V1", fullres_image_file="full.jpg")
    sdata.write(tmp_path / "v1.zarr")
    args = ["convert", "spatialdata", "--zarr", str(tmp_path / "v1.zarr"), "--sample-id", "V1", "--out", str(tmp_path / "r")]
    assert main([*args, "--species", "Mus musculus"]) == 0
    s = read_hest(tmp_path / "r", ids=["V1"])[0]
    assert list(s.adata.obs_names) == list(a.obs_names)
    np.testing.assert_array_equal(np.asarray(s.adata.X.todense()), counts)
    np.testing.assert_allclose(s.adata.obsm["spatial"], a.obsm["spatial"], atol=1e-6)  # the full image's pixels
    assert s.pixel_size_um == pytest.approx(55.0 / lib["scalefactors"]["spot_diameter_fullres"], rel=1e-6)
    assert s.meta["spot_diameter"] == pytest.approx(55.0)
    # the hires image alone (no full image): spots are carried into its pixels by the store's scale factor
    del sdata.images["V1_full_image"]
    sdata.write(tmp_path / "hires.zarr")
    args[3], args[5], args[-1] = str(tmp_path / "hires.zarr"), "H1", str(tmp_path / "r2")
    assert main([*args, "--species", "Mus musculus"]) == 0
    h = read_hest(tmp_path / "r2", ids=["H1"])[0]
    np.testing.assert_allclose(h.adata.obsm["spatial"], a.obsm["spatial"] * f, atol=1e-4)
    assert h.pixel_size_um == pytest.approx(s.pixel_size_um / f, rel=1e-6)
