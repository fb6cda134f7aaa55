"""Bad input: each case raises a ValueError/FileNotFoundError naming the file and the fix, and loses nothing."""

from __future__ import annotations

import shutil

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest

from spade_st._validation import LayoutError, SpadeInputError
from spade_st.cli import main
from spade_st.io import SampleMeta, read_hest, write_sample


def _adata(n=20, g=8, seed=0):
    rng = np.random.default_rng(seed)
    a = ad.AnnData(
        X=rng.poisson(3, size=(n, g)).astype(np.int32),
        obs=pd.DataFrame(index=[f"bc{i}" for i in range(n)]),
        var=pd.DataFrame(index=[f"G{j}" for j in range(g)]),
    )
    a.obsm["spatial"] = rng.uniform(150, 350, size=(n, 2))
    return a


IMG = np.full((500, 500, 3), 200, np.uint8)


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    write_sample(r, "S1", _adata(), IMG, 0.5, SampleMeta(organ="Breast"), progress=False)
    return r


def _mutate(a, case):
    if case == "non_integer":
        a.X = a.X.astype(np.float32) + 0.5
    elif case == "negative":
        a.X = a.X.astype(np.int32) - 10
    elif case == "nan":
        x = a.X.astype(np.float32)
        x[0, 0] = np.nan
        a.X = x
    elif case == "dup_barcodes":
        a.obs_names = ["bc0"] * a.n_obs
    elif case == "dup_genes":
        a.var_names = ["G0"] * a.n_vars
    elif case == "outside":
        a.obsm["spatial"][3] = (900.0, 10.0)
    elif case == "no_spatial":
        del a.obsm["spatial"]
    elif case == "empty":
        a = a[:0].copy()
    return a


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("non_integer", "RAW counts"),
        ("negative", "negative"),
        ("nan", "NaN"),
        ("dup_barcodes", "duplicate barcodes"),
        ("dup_genes", "duplicate gene names"),
        ("outside", "outside the 500x500 image"),
        ("no_spatial", "obsm['spatial']"),
        ("empty", "no spots"),
    ],
)
def test_write_sample_refuses(root, case, needle):
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(SpadeInputError, match="S2") as exc:
        write_sample(root, "S2", _mutate(_adata(seed=1), case), IMG, 0.5, progress=False)
    assert needle in str(exc.value)
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before  # nothing lost, nothing half-written
    assert [s.id for s in read_hest(root)] == ["S1"]


@pytest.mark.parametrize(
    ("px", "needle"), [(None, "--pixel-size-um"), (-1.0, "not plausible"), (float("nan"), "not plausible")]
)
def test_unknown_or_bad_pixel_size(tmp_path, px, needle):
    with pytest.raises(SpadeInputError, match=needle):
        write_sample(tmp_path / "r", "S1", _adata(), IMG, px, progress=False)


@pytest.mark.parametrize("sid", ["../evil", "a/b", "", ".hidden"])
def test_bad_sample_id(tmp_path, sid):
    with pytest.raises(SpadeInputError, match="not usable as a file name"):
        write_sample(tmp_path / "r", sid, _adata(), IMG, 0.5, progress=False)


def _break(root, case):
    st, pt = root / "st" / "S1.h5ad", root / "patches" / "S1.h5"
    if case == "missing_h5ad":
        st.unlink()
        return "missing st/S1.h5ad"
    if case == "missing_h5":
        pt.unlink()
        return "missing patches/S1.h5"
    if case == "corrupt_h5ad":
        st.write_bytes(st.read_bytes()[:200])
        return "cannot read S1.h5ad"
    if case == "corrupt_h5":
        pt.write_bytes(b"not hdf5 at all")
        return "cannot read S1.h5"
    if case == "h5_missing_dataset":
        with h5py.File(pt, "a") as f:
            del f["coords"]
        return "no dataset 'coords'"
    if case == "h5_wrong_dtype":
        with h5py.File(pt, "a") as f:
            img = f["img"][()].astype(np.float32)
            del f["img"]
            f["img"] = img
        return "must be uint8"
    if case == "id_mismatch":
        a = ad.read_h5ad(st)
        a.obs_names = [f"other{i}" for i in range(a.n_obs)]
        a.write_h5ad(st)
        return "not spots of S1.h5ad"
    if case == "length_mismatch":
        with h5py.File(pt, "a") as f:
            c = f["coords"][()]
            del f["coords"]
            f["coords"] = c[:-1]
        return "coords"
    if case == "corrupt_json":
        (root / "metadata" / "S1.json").write_text("{not json")
        return "not valid JSON"
    if case == "missing_table":
        (root / "metadata.csv").unlink()
        return "no sample table"
    if case == "dup_table_ids":
        t = pd.read_csv(root / "metadata.csv")
        pd.concat([t, t]).to_csv(root / "metadata.csv", index=False)
        return "more than once"
    raise AssertionError(case)


CASES = [
    "missing_h5ad",
    "missing_h5",
    "corrupt_h5ad",
    "corrupt_h5",
    "h5_missing_dataset",
    "h5_wrong_dtype",
    "id_mismatch",
    "length_mismatch",
    "missing_table",
    "dup_table_ids",
    "corrupt_json",
]


@pytest.mark.parametrize("case", CASES)
def test_read_hest_names_the_problem(root, case, capsys):
    needle = _break(root, case)
    with pytest.raises((SpadeInputError, FileNotFoundError)) as exc:
        read_hest(root)
    assert needle in str(exc.value)
    assert main(["check", "--data", str(root)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("spade-st: error:") and needle in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_read_hest_lists_every_problem_at_once(root):
    write_sample(root, "S2", _adata(seed=2), IMG, 0.5, progress=False)
    (root / "st" / "S1.h5ad").unlink()
    (root / "patches" / "S2.h5").write_bytes(b"junk")
    with pytest.raises(LayoutError) as exc:
        read_hest(root, ids=["S1", "S2", "S9"])
    probs = exc.value.problems
    assert len(probs) == 3
    assert any("S1: missing st/S1.h5ad" in p for p in probs)
    assert any("S2: cannot read S2.h5" in p for p in probs)
    assert any("S9: not in the sample table" in p for p in probs)


def test_failure_mid_write_keeps_the_old_sample(root, monkeypatch):
    """An error while the new files are written leaves the existing sample untouched and readable."""
    import spade_st.io.writer as w

    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(w, "_write_patches", boom)
    with pytest.raises(OSError, match="disk full"):
        write_sample(root, "S1", _adata(seed=5), IMG, 0.5, overwrite=True, progress=False)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    read_hest(root)


def test_debug_flag_shows_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "check", "--data", str(tmp_path / "nope")])


def test_copy_of_root_still_reads(root, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    assert [s.id for s in read_hest(dst)] == ["S1"]


def test_real_hest_table_opens_a_partial_download(tmp_path):
    """A root with HEST's own HEST_v1_1_0.csv (1,229 rows) and only some samples downloaded opens as it is."""
    from conftest import HEST_TABLE, require

    require(HEST_TABLE)
    root = tmp_path / "hest"
    write_sample(root, "TENX95", _adata(), IMG, 0.5, progress=False)
    (root / "metadata.csv").unlink()
    shutil.copy(HEST_TABLE, root / "HEST_v1_1_0.csv")
    (s,) = read_hest(root)
    assert s.id == "TENX95" and s.organ == "Breast" and s.meta["st_technology"] == "Xenium"  # from HEST's row
    assert s.pixel_size_um is not None and len(s.patches) == 20
    with pytest.raises(LayoutError, match=r"NCBI783: missing st/NCBI783\.h5ad"):
        read_hest(root, ids=["TENX95", "NCBI783"])


def test_a_file_without_features_is_refused_by_its_attributes_alone(tmp_path):
    """predict and pretrain check files by their attributes before any work: a patches file is not features."""
    from spade_st.io.features import read_feature_attrs

    p = tmp_path / "S1.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("img", data=np.zeros((2, 4, 4, 3), np.uint8))
        f.attrs["encoder"] = "uni"
    with pytest.raises(SpadeInputError, match="is it a feature file"):
        read_feature_attrs(p)


def test_check_flags_coarse_images_and_exits_1(tmp_path, capsys):
    """A 6x upsampled sample is listed with a warning; a sample whose pixel size says otherwise is not "OK"."""
    r = tmp_path / "r"
    write_sample(r, "S1", _adata(), IMG, 0.5, SampleMeta(organ="Breast"), progress=False)
    with pytest.warns(UserWarning, match="upsampled 6.4x"):
        write_sample(r, "S2", _adata(seed=1), IMG, 3.2, SampleMeta(organ="Breast"), progress=False)
    assert main(["check", "--data", str(r)]) == 0
    out = capsys.readouterr().out
    assert "S1\t" in out and "warning: patches upsampled 6.4x" in out and "2 sample(s) OK, 0 with problems" in out
    meta = r / "metadata.csv"
    table = pd.read_csv(meta, dtype=str)
    table.loc[table["id"] == "S2", ["pixel_size_um_estimated", "pixel_size_um_embedded"]] = "25"  # a 25 µm/px table
    table.to_csv(meta, index=False)
    assert main(["check", "--data", str(r)]) == 1
    assert "PROBLEM: patches upsampled 50x" in capsys.readouterr().out


def test_convert_anndata_names_its_own_coordinate_fix(tmp_path, capsys):
    from PIL import Image

    a = _adata()
    a.obsm["spatial"] = a.obsm["spatial"] * 4  # coordinates of a 4x larger image
    a.write_h5ad(tmp_path / "a.h5ad")
    Image.fromarray(IMG).save(tmp_path / "he.png")
    args = ["convert", "anndata", "--adata", str(tmp_path / "a.h5ad"), "--image", str(tmp_path / "he.png")]
    assert (
        main(
            [
                *args,
                "--sample-id",
                "S1",
                "--species",
                "Homo sapiens",
                "--pixel-size-um",
                "0.5",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "outside the 500x500 image" in err and "--coord-scale" not in err and "obsm['spatial']" in err
