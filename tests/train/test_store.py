"""RowFile reads rows of a .npy exactly as NumPy indexing does."""

from __future__ import annotations

import numpy as np

from spade_st.train.store import RowFile


def test_rowfile_matches_numpy(tmp_path):
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float16):
        a = rng.normal(size=(500, 7)).astype(dtype)
        p = tmp_path / f"a_{np.dtype(dtype).name}.npy"
        np.save(p, a)
        rf = RowFile(p)
        assert rf.shape == (500, 7) and len(rf) == 500
        for idx in (np.array([5, 3, 4, 499, 0, 3]), rng.integers(0, 500, 200), np.arange(100, 140), np.array([], int)):
            np.testing.assert_array_equal(rf[idx], a[idx])
        np.testing.assert_array_equal(rf[10:20], a[10:20])


def test_rowfile_truncated_or_out_of_range(tmp_path):
    import pytest

    from spade_st._validation import SpadeInputError

    p = tmp_path / "a.npy"
    np.save(p, np.arange(40, dtype=np.float32).reshape(10, 4))
    with open(p, "r+b") as fh:
        fh.truncate(p.stat().st_size - 8)  # the last row loses half its bytes
    rf = RowFile(p)
    np.testing.assert_array_equal(rf[[0, 8]], [[0, 1, 2, 3], [32, 33, 34, 35]])
    with pytest.raises(SpadeInputError, match="truncated"):
        rf[[9]]
    with pytest.raises(IndexError, match="out of range"):
        rf[[10]]
