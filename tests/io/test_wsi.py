"""WSI access on the real .svs slides, the pyramidal TIFF writer, and patch geometry on synthetic marks."""

from __future__ import annotations

import numpy as np
import pytest

from spade_st._validation import SpadeInputError
from spade_st.io import extract_patch, open_wsi, write_pyramidal_tiff
from spade_st.io.wsi import ArrayWSI

from conftest import WSI_SMALL, require


def test_real_svs_with_pixel_size():
    w = open_wsi(require(WSI_SMALL / "cmu-1-small-region.svs"))
    assert w.backend == "openslide"
    assert w.dimensions == (2220, 2967)
    assert w.pixel_size_um == pytest.approx(0.499, abs=1e-3)
    region = w.read_region((1000, 1400), 0, (64, 32))
    assert region.shape == (32, 64, 3) and region.dtype == np.uint8
    assert region.std() > 5  # real tissue, not blank


def test_real_svs_without_pixel_size_needs_one():
    path = require(WSI_SMALL / "tcga-cr-7395-01a-01-ts1.svs")
    w = open_wsi(path)
    assert not w.has_pixel_size
    with pytest.raises(SpadeInputError, match="pixel-size-um"):
        _ = w.pixel_size_um
    assert open_wsi(path, pixel_size_um=0.5).pixel_size_um == 0.5


def test_tifffile_fallback_matches_openslide():
    path = require(WSI_SMALL / "cmu-1-small-region.svs")
    a = open_wsi(path, backend="openslide")
    b = open_wsi(path, backend="tifffile")
    assert b.backend == "tifffile"
    assert b.pixel_size_um == pytest.approx(a.pixel_size_um)
    ra, rb = a.read_region((500, 700), 0, (128, 96)), b.read_region((500, 700), 0, (128, 96))
    # both decode the same JPEG tiles (decoders may differ by a grey level)
    assert np.abs(ra.astype(int) - rb.astype(int)).mean() < 2.0


def test_pyramidal_tiff_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(1100, 900, 3), dtype=np.uint8)
    path = tmp_path / "s.tif"
    write_pyramidal_tiff(path, img, 0.25)
    for backend in ("openslide", "tifffile"):
        w = open_wsi(path, backend=backend)
        assert w.dimensions == (900, 1100)
        assert w.level_count >= 3
        assert w.pixel_size_um == pytest.approx(0.25, rel=1e-4)
        np.testing.assert_array_equal(w.read_region((10, 20), 0, (50, 40)), img[20:60, 10:60])
    # outside the slide is white
    assert (open_wsi(path).read_region((-20, -20), 0, (10, 10)) == 255).all()


def test_corrupt_slide_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"II*\x00garbage" * 10)
    with pytest.raises(SpadeInputError, match=r"bad\.svs"):
        open_wsi(bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.tif"):
        open_wsi(tmp_path / "missing.tif")


@pytest.mark.parametrize("px", [0.25, 0.5, 0.687, 2.0])
@pytest.mark.parametrize("center", [(400.0, 300.0), (401.37, 299.62)])
def test_patch_is_centred_on_a_planted_mark(px, center):
    """A Gaussian dot drawn at a sub-pixel spot centre lands at the patch centre point (112, 112)."""
    h, w = 800, 900
    yy, xx = np.mgrid[0:h, 0:w] + 0.5  # pixel centres on the continuous grid
    sigma = 6.0 / px  # 6 µm
    dot = np.exp(-((xx - center[0]) ** 2 + (yy - center[1]) ** 2) / (2 * sigma**2))
    img = np.repeat((255 * (1 - dot))[..., None], 3, axis=2).round().astype(np.uint8)
    patch = extract_patch(ArrayWSI("mem", [img], px, "memory"), center)
    assert patch.shape == (224, 224, 3)
    weight = 255.0 - patch[..., 0].astype(float)
    weight[weight < 0.05 * weight.max()] = 0
    py, px_ = np.mgrid[0:224, 0:224] + 0.5
    cy, cx = (weight * py).sum() / weight.sum(), (weight * px_).sum() / weight.sum()
    assert abs(cx - 112) < 0.25 and abs(cy - 112) < 0.25
