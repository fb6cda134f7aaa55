"""The README's quickstart (examples/her2st_quickstart.py) on the real her2st sections, its plots checked."""

from __future__ import annotations

import importlib.util

from matplotlib.collections import EllipseCollection

from conftest import REPO


def _load():
    spec = importlib.util.spec_from_file_location("her2st_quickstart", REPO / "examples" / "her2st_quickstart.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quickstart_runs_and_draws(her2st_root, tmp_path):
    out = _load().main(["--root", str(her2st_root), "--out", str(tmp_path), "--epochs", "3"])
    legend = {t.get_text() for t in out["umap"].get_legend().get_texts()}
    assert legend == {"C2", "C3", "C4"}  # the UMAP by sample shows every section
    assert sum(len(c.get_offsets()) for c in out["umap"].collections) == out["spots"].n_obs
    titles = [ax.get_title() for ax in out["gene_maps"].axes if ax.get_title()]
    assert len([t for t in titles if "measured" in t]) == 3 and len([t for t in titles if "r = " in t]) == 3
    clims = [c.get_clim() for ax in out["gene_maps"].axes for c in ax.collections if isinstance(c, EllipseCollection)]
    assert len(clims) == 6 and len(set(clims)) == 6  # a colour scale per panel
    assert out["pred"].n_obs == out["spots"].obs["sample"].eq("C4").sum()
    assert (tmp_path / "umap_by_sample.png").stat().st_size > 10_000 and (tmp_path / "C4_genes.png").is_file()
