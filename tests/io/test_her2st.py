"""The her2st converter on the five real sections: counts, geometry, labels, reopening."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy import ndimage

from spade_st.cli import main
from spade_st.io import read_hest, read_image

from conftest import HER2ST, HER2ST_SECTIONS, her2st_args


def test_one_patch_per_matched_spot(her2st_root):
    samples = {s.id: s for s in read_hest(her2st_root, require_wsi=True)}
    assert list(samples) == list(HER2ST_SECTIONS)
    for sid, (_, px, _, n) in HER2ST_SECTIONS.items():
        s = samples[sid]
        assert s.adata.n_obs == n
        assert len(s.patches) == n
        assert list(s.patches.barcodes) == list(s.adata.obs_names)
        assert s.patches.read(0, 2).shape == (2, 224, 224, 3)
        assert s.pixel_size_um == pytest.approx(px)
        assert s.wsi().pixel_size_um == pytest.approx(px, rel=1e-4)
        x = s.adata.X
        assert np.issubdtype(x.dtype, np.integer) and x.sum() > 0
        assert all(b.count("x") == 1 for b in s.adata.obs_names)


def test_a1_labels(her2st_root):
    (a1,) = read_hest(her2st_root, ids=["A1"])
    lab = a1.adata.obs["label"]
    counts = lab.value_counts()
    assert counts["invasive cancer"] == 282
    assert counts["connective tissue"] == 24
    assert set(lab.cat.categories) >= {"cancer in situ", "adipose tissue", "immune infiltrate", "undetermined"}


def _phase_shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sub-pixel (dy, dx) translation that maps b onto a, by phase correlation with parabolic peak refinement."""
    a = a - a.mean()
    b = b - b.mean()
    win = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    r = np.fft.fft2(a * win) * np.conj(np.fft.fft2(b * win))
    corr = np.real(np.fft.ifft2(r / (np.abs(r) + 1e-9)))
    peak = np.array(np.unravel_index(np.argmax(corr), corr.shape))
    shift = peak.astype(float)
    for ax in range(2):
        idx = [peak[0], peak[1]]
        vals = []
        for d in (-1, 0, 1):
            j = list(idx)
            j[ax] = (idx[ax] + d) % corr.shape[ax]
            vals.append(corr[tuple(j)])
        den = vals[0] - 2 * vals[1] + vals[2]
        if den != 0:
            shift[ax] += 0.5 * (vals[0] - vals[2]) / den
    size = np.array(corr.shape)
    shift[shift > size / 2] -= size[shift > size / 2]
    return shift


@pytest.mark.parametrize("section", list(HER2ST_SECTIONS))
def test_patch_centres_on_spot_centres_real_images(her2st_root, section):
    """Each patch's centre is its spot's centre within 1 px, checked against the real image itself.

    Reference: bilinear samples of the ORIGINAL image at the level-0 positions that the 224 px, 0.5 µm/px
    grid centred on the spot must hit (pixel centres at spot + (j + 0.5 - 112) * s). Phase correlation between
    our patch and that reference measures any misplacement, in output pixels.
    """
    img_name, px, _, _ = HER2ST_SECTIONS[section]
    gray = read_image(HER2ST / "images" / img_name) @ np.array([0.299, 0.587, 0.114])  # luminance, as PIL's "L"
    (s,) = read_hest(her2st_root, ids=[section])
    centers = s.adata.obsm["spatial"]
    with h5py.File(s.layout.patches(section), "r") as f:
        coords = f["coords"][()]
        size_l0 = f["img"].attrs["patch_size_level0"]
        assert f["img"].attrs["pixel_size_um"] == 0.5
    # the stored top-left + half a patch is the spot centre (rounding only)
    assert np.abs(coords + size_l0 / 2 - centers).max() <= 0.5 + 1e-9
    step = 0.5 / px
    grid = (np.arange(224) + 0.5 - 112) * step
    rng = np.random.default_rng(0)
    shifts = []
    for i in rng.choice(len(centers), size=min(12, len(centers)), replace=False):
        patch = s.patches.read(i, i + 1)[0].astype(np.float64).mean(axis=2)
        cx, cy = centers[i]
        # pixel i covers [i, i+1): continuous x -> array index x - 0.5
        yy, xx = np.meshgrid(cy + grid - 0.5, cx + grid - 0.5, indexing="ij")
        ref = ndimage.map_coordinates(gray, [yy, xx], order=1, mode="nearest")
        if ref.std() < 5:  # blank background has nothing to align on
            continue
        shifts.append(_phase_shift(ref, patch))
    shifts = np.abs(np.array(shifts))
    assert len(shifts) >= 5
    # within 1 level-0 pixel = 1/step output pixels; demand 1 output pixel (stricter for every section)
    assert np.median(shifts) < 0.5
    assert shifts.max() < 1.0


def test_existing_id_refused_then_overwritten(her2st_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(her2st_root, root)
    before = (root / "st" / "C3.h5ad").read_bytes()
    assert main(her2st_args("C3", root)) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert (root / "st" / "C3.h5ad").read_bytes() == before
    assert main([*her2st_args("C3", root), "--overwrite"]) == 0
    assert [s.id for s in read_hest(root)] == list(HER2ST_SECTIONS)


@pytest.mark.slow
def test_quiet_data_problems_warn(tmp_path, capsys):
    """A1's image is 3.185 µm/px: its 0.5 µm/px patches are upsampled 6.4x; a spot table of another section
    (here: the first 40 selected spots only) drops most count rows. Both are said, in one line each."""
    import pandas as pd

    from spade_st._validation import DataWarning

    with pytest.warns(DataWarning, match=r"upsampled 6\.4x"):
        assert main(her2st_args("A1", tmp_path / "a")) == 0
    spots = pd.read_csv(HER2ST / "spots" / "C2_selection.tsv", sep="\t")
    spots.head(40).to_csv(tmp_path / "few.tsv", sep="\t", index=False)
    args = her2st_args("C2", tmp_path / "c")
    args[args.index("--spots") + 1] = str(tmp_path / "few.tsv")
    with pytest.warns(DataWarning, match=r"only \d+ of 187 count rows"):
        assert main(args) == 0
