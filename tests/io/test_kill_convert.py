"""A conversion killed with SIGKILL at any point leaves no sample that read_hest accepts half-written, keeps the
other samples, and a rerun completes it. The kills happen at named fault points (``SPADE_ST_FAULT``), so each
window between two writes is hit for certain."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from spade_st.io import read_hest

from conftest import HER2ST, her2st_args, require

POINTS = [
    "convert-C3-staged",  # everything staged (a half-written staging folder left behind), nothing replaced
    "convert-C3-replaced-patches.h5",  # every file in place, the metadata row not yet written back
]  # the first-conversion test below kills between two file replacements


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A root holding C4 only, and one holding C3 and C4 (converted once)."""
    require(HER2ST)
    base = tmp_path_factory.mktemp("kill")
    for sid in ("C4", "C3"):
        r = subprocess.run(
            [sys.executable, "-m", "spade_st.cli", *her2st_args(sid, base / "both")], capture_output=True
        )
        assert r.returncode == 0, r.stderr
        if sid == "C4":
            shutil.copytree(base / "both", base / "c4")
    return base


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_killed_reconversion_then_rerun(converted, tmp_path, point):
    root = tmp_path / "root"
    shutil.copytree(converted / "both", root)
    cmd = [sys.executable, "-m", "spade_st.cli", *her2st_args("C3", root), "--overwrite"]
    killed = subprocess.run(cmd, capture_output=True, env=os.environ | {"SPADE_ST_FAULT": point}, timeout=300)
    assert killed.returncode == -9, killed.stderr  # the fault point was reached
    listed = {s.id: s for s in read_hest(root, require_wsi=True)}  # whatever is listed is complete
    assert "C4" in listed  # the other sample is untouched
    for s in listed.values():
        assert len(s.patches) == s.adata.n_obs == {"C3": 180, "C4": 184}[s.id]
    if point.startswith("convert-C3-replaced"):
        assert "C3" not in listed  # unlisted while its files are being replaced
    else:
        assert "C3" in listed  # the old C3 stays listed until the new one is staged
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert {s.id: len(s.patches) for s in read_hest(root, require_wsi=True)}["C3"] == 180
    assert not [p for p in os.listdir(root) if p.startswith(".tmp-")]


@pytest.mark.slow
def test_killed_first_conversion_then_rerun(converted, tmp_path):
    """A sample's first conversion killed once staged: nothing of it is listed, the root stays readable."""
    root = tmp_path / "root"
    shutil.copytree(converted / "c4", root)
    cmd = [sys.executable, "-m", "spade_st.cli", *her2st_args("C3", root)]
    killed = subprocess.run(
        cmd, capture_output=True, env=os.environ | {"SPADE_ST_FAULT": "convert-C3-replaced-wsi.tif"}
    )
    assert killed.returncode == -9, killed.stderr
    assert [s.id for s in read_hest(root, require_wsi=True)] == ["C4"]
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # no --overwrite: C3 was never listed
    assert rerun.returncode == 0, rerun.stderr
    assert {s.id: len(s.patches) for s in read_hest(root, require_wsi=True)} == {"C3": 180, "C4": 184}
    assert not [p for p in os.listdir(root) if p.startswith(".tmp-")]
