"""``spade-st extract-wsi`` on the real small slides, feature-file compatibility, and torchrun sharding."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from spade_st.cli import main
from spade_st.io import open_wsi
from spade_st.io.features import read_features
from spade_st.io.tissue import tissue_mask

from conftest import WSI_SMALL, extract_cli, require, run_cli


@pytest.mark.slow
def test_extract_wsi_real_slides(tmp_path, capsys):
    cmu = require(WSI_SMALL / "cmu-1-small-region.svs")
    tcga = WSI_SMALL / "tcga-cr-7395-01a-01-ts1.svs"
    out = tmp_path / "f"
    # the TCGA slide has no pixel size: a one-line error naming the fix
    assert main(["extract-wsi", "--wsi", str(tcga), "--encoder", "random_cnn", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "tcga-cr-7395" in err and "--pixel-size-um" in err
    assert main(["extract-wsi", "--wsi", str(cmu), "--encoder", "random_cnn", "--out", str(out)]) == 0
    assert (
        main(
            ["extract-wsi", "--wsi", str(tcga), "--pixel-size-um", "0.5", "--encoder", "random_cnn", "--out", str(out)]
        )
        == 0
    )
    fs = read_features(out / "random_cnn" / "cmu-1-small-region.h5", require_complete=True)
    assert fs.features.shape[1] == 64 and len(fs) > 20
    assert fs.attrs["patch_size"] == 224 and fs.attrs["level0_magnification"] == pytest.approx(10 / 0.499)
    step = fs.attrs["patch_size_level0"]
    assert step == pytest.approx(224 * 0.5 / 0.499)
    # tiles are on the grid, inside the slide, and on tissue
    w = open_wsi(cmu)
    assert (fs.coords >= 0).all() and (fs.coords[:, 0] + step <= w.dimensions[0] + 1).all()
    mask, scale = tissue_mask(w)
    cx = ((fs.coords[:, 0] + step / 2) / scale).astype(int)
    cy = ((fs.coords[:, 1] + step / 2) / scale).astype(int)
    assert mask[cy, cx].mean() > 0.8


def test_reads_trident_and_hest_feature_files(tmp_path):
    rng = np.random.default_rng(0)
    t = tmp_path / "trident.h5"
    with h5py.File(t, "w") as f:  # TRIDENT: features (N, D), coords, attributes on coords
        f["features"] = rng.normal(size=(5, 8)).astype(np.float32)
        f["coords"] = np.arange(10).reshape(5, 2)
        f["coords"].attrs["patch_size"] = 256
    fs = read_features(t)
    assert fs.features.shape == (5, 8) and fs.coords.shape == (5, 2)
    h = tmp_path / "hest.h5"
    with h5py.File(h, "w") as f:  # HEST-Benchmark: embeddings + barcodes (N, 1) bytes
        f["embeddings"] = rng.normal(size=(3, 4)).astype(np.float32)
        f["barcodes"] = np.array([[b"a"], [b"b"], [b"c"]])
    fs = read_features(h)
    assert list(fs.barcode) == ["a", "b", "c"]
    clam = tmp_path / "clam.h5"
    with h5py.File(clam, "w") as f:  # CLAM: (1, N, D)
        f["features"] = rng.normal(size=(1, 4, 6)).astype(np.float32)
    assert read_features(clam).features.shape == (4, 6)


@pytest.mark.slow
def test_torchrun_shards_samples_exactly_once(synthetic_root, tmp_path):
    out = tmp_path / "f"
    args = [
        "extract",
        "--data",
        synthetic_root,
        "--encoder",
        "random_cnn",
        "--out",
        out,
        "--device",
        "cpu",
        "--batch-size",
        "16",
    ]
    r = run_cli(args, nproc=2, port=29517)
    assert r.returncode == 0, r.stderr[-2000:]
    files = sorted((out / "random_cnn").glob("*.h5"))
    assert [f.stem for f in files] == ["SYN00", "SYN01", "SYN02"]
    ranks = [read_features(f).attrs["rank"] for f in files]
    assert ranks == [0, 1, 0]  # round-robin: each sample written by exactly one rank
    assert {read_features(f).attrs["world_size"] for f in files} == {2}
    # the same features as a single process
    single = tmp_path / "s"
    assert extract_cli(synthetic_root, single, "random_cnn", "--device", "cpu", "--batch-size", "16") == 0
    for f in files:
        np.testing.assert_allclose(
            read_features(f).features, read_features(single / "random_cnn" / f.name).features, rtol=1e-5, atol=1e-5
        )


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["write-SYN01", "write-SYN02"])
def test_killed_extract_never_leaves_a_trusted_file(synthetic_root, tmp_path, fault):
    """SIGKILL while a feature file is being written; the rerun redoes it and matches an uninterrupted run."""
    out = tmp_path / "f"
    args = ["extract", "--data", synthetic_root, "--encoder", "random_cnn", "--out", out, "--device", "cpu"]
    # default threads in the subprocess, as in the in-process reference run below (bitwise comparison)
    r = run_cli(args, {"SPADE_ST_FAULT": fault}, one_thread=False)
    assert r.returncode == -9
    killed = out / "random_cnn" / f"{fault.split('-')[1]}.h5"
    assert not killed.exists()  # only a .tmp-* file, which no reader trusts
    assert any(p.name.startswith(".tmp-") for p in (out / "random_cnn").iterdir())
    r = run_cli(args, one_thread=False)
    assert r.returncode == 0, r.stderr[-1000:]
    ref = tmp_path / "ref"
    assert extract_cli(synthetic_root, ref, "random_cnn", "--device", "cpu") == 0
    assert not any(p.name.startswith(".tmp-") for p in (out / "random_cnn").iterdir())  # stale temp removed
    for f in sorted((ref / "random_cnn").glob("*.h5")):
        np.testing.assert_array_equal(
            read_features(out / "random_cnn" / f.name, require_complete=True).features, read_features(f).features
        )


def test_slide_pixel_size_wins_and_geometry_keys_resume(tmp_path, capsys):
    cmu = require(WSI_SMALL / "cmu-1-small-region.svs")
    tcga = WSI_SMALL / "tcga-cr-7395-01a-01-ts1.svs"
    out = tmp_path / "f"
    base = ["extract-wsi", "--encoder", "random_cnn", "--out", str(out), "--device", "cpu"]
    dst = out / "random_cnn" / "cmu-1-small-region.h5"
    # a flag 50 % off the slide's own 0.499 µm/px is refused, nothing written
    assert main([*base, "--wsi", str(cmu), "--pixel-size-um", "0.25"]) == 1
    assert "--force-pixel-size" in capsys.readouterr().err and not dst.exists()
    # within 5 %: the slide's value is used
    assert main([*base, "--wsi", str(cmu), "--pixel-size-um", "0.5"]) == 0
    fs = read_features(dst)
    assert fs.attrs["level0_pixel_size_um"] == 0.499 and fs.attrs["pixel_size_source"] == "slide"
    n_slide = len(fs)
    assert (fs.arrays["tissue_fraction"] >= 0.25).all() and len(fs.arrays["tissue_fraction"]) == n_slide
    # forced: recorded, and the complete file with other geometry is recomputed (and says so)
    assert main([*base, "--wsi", str(cmu), "--pixel-size-um", "0.25", "--force-pixel-size"]) == 0
    assert "recomputing cmu-1-small-region.h5" in capsys.readouterr().err
    fs = read_features(dst)
    assert fs.attrs["pixel_size_source"] == "forced" and fs.attrs["level0_pixel_size_um"] == 0.25
    assert len(fs) < n_slide
    # back to the slide's own value: recomputed again, not the forced file kept
    assert main([*base, "--wsi", str(cmu)]) == 0
    assert len(read_features(dst)) == n_slide
    # the target pixel size and tile size are options and part of the key
    assert main([*base, "--wsi", str(cmu), "--target-um", "1.0", "--tile-size", "112"]) == 0
    fs = read_features(dst)
    assert fs.attrs["patch_size"] == 112 and fs.attrs["pixel_size_um"] == 1.0
    assert fs.attrs["patch_size_level0"] == pytest.approx(112 * 1.0 / 0.499)
    # every slide is checked before the first tile: the second slide's missing pixel size stops the run
    fresh = tmp_path / "g"
    assert (
        main(["extract-wsi", "--encoder", "random_cnn", "--out", str(fresh), "--wsi", str(cmu), "--wsi", str(tcga)])
        == 1
    )
    assert "tcga-cr-7395" in capsys.readouterr().err and not (fresh / "random_cnn").exists()


def test_extract_wsi_bad_inputs_refused_before_work(tmp_path, capsys):
    from PIL import Image

    white = tmp_path / "white.png"
    Image.fromarray(np.full((1200, 1500, 3), 250, np.uint8)).save(white)
    out = tmp_path / "f"
    base = ["extract-wsi", "--encoder", "random_cnn", "--out", str(out), "--pixel-size-um", "0.5"]
    assert main([*base, "--wsi", str(white)]) == 1
    assert "no tile" in capsys.readouterr().err and not (out / "random_cnn").exists()
    assert main([*base, "--wsi", str(white), "--min-tissue", "2"]) == 1
    assert "--min-tissue 2" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*base, "--wsi", str(empty)]) == 1
    assert "no slides" in capsys.readouterr().err
