"""A conversion killed with SIGKILL at any point leaves no sample that read_hest accepts half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from spade_st.io import read_hest

from conftest import HER2ST, her2st_args, require


@pytest.mark.slow
@pytest.mark.parametrize("delay", [1.5, 4.0, 7.0])
def test_killed_conversion_then_rerun(tmp_path, delay):
    require(HER2ST)
    root = tmp_path / "root"
    cmd = [sys.executable, "-m", "spade_st.cli", *her2st_args("C3", root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if (root / "metadata.csv").exists():
        # whatever is listed must be complete and consistent
        for s in read_hest(root, require_wsi=True):
            assert len(s.patches) == s.adata.n_obs == 180
    rerun = subprocess.run([*cmd, "--overwrite"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    (s,) = read_hest(root, require_wsi=True)
    assert len(s.patches) == 180
    assert not [p for p in os.listdir(root) if p.startswith(".tmp-")]
