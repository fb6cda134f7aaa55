"""Without the [scverse] extra, the plug-in and the SpatialData functions say which pip line adds it."""

from __future__ import annotations

import importlib
import sys

import pytest


def test_missing_extra_names_the_pip_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "lazyslide_models", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "spade_st.lazyslide", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'spade-st\[scverse\]'"):
        importlib.import_module("spade_st.lazyslide")
    monkeypatch.setitem(sys.modules, "spatialdata", None)
    from spade_st.io import convert_spatialdata, to_spatialdata
    from spade_st.io.spatialdata_in import SpatialDataConfig

    with pytest.raises(ImportError, match=r"pip install 'spade-st\[scverse\]'"):
        to_spatialdata(data=tmp_path, sample_id="S")
    (tmp_path / "s.zarr").mkdir()
    with pytest.raises(ImportError, match=r"pip install 'spade-st\[scverse\]'"):
        convert_spatialdata(SpatialDataConfig(zarr=tmp_path / "s.zarr", sample_id="S", out=tmp_path / "r"))
