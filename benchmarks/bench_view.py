"""Time ``spade-st view`` on both wsi_small slides: first write (pyramid + overlays + page), then a rerun.

Predictions are planted in ``spade-st predict``'s layout (a tile grid as ``extract-wsi`` cuts it: 224 px at
0.5 µm/px, ``--genes`` genes of random values), so the figure needs no trained model; the pyramid, which is
most of the work, does not depend on them. The rerun is the baseline: every pyramid level is verified and
skipped, so ``first / rerun`` is what reusing the tiles saves.

    python benchmarks/bench_view.py [--genes 50] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import SHARED, last_line, peak_rss_gb

SLIDES = ("cmu-1-small-region.svs", "tcga-cr-7395-01a-01-ts1.svs")
PIXEL_SIZE_UM = 0.5  #: for the TCGA slide, which records none (as the tests give it)


def plant(slide: Path, out: Path, genes: int, seed: int = 0) -> int:
    """Predictions of a tile grid over the whole slide -> ``out/<stem>.h5ad``; returns the number of tiles."""
    import anndata as ad
    import pandas as pd

    from spade_st.io.wsi import open_wsi

    with open_wsi(slide, pixel_size_um=PIXEL_SIZE_UM) as w:
        (width, height), px = w.dimensions, w.pixel_size_um
    side = 224 * 0.5 / px
    gx, gy = np.meshgrid(np.arange(0, width - side, side), np.arange(0, height - side, side))
    xy = np.stack([gx.ravel(), gy.ravel()], 1) + side / 2
    rng = np.random.default_rng(seed)
    a = ad.AnnData(
        X=(rng.random((len(xy), genes)) * 3).astype(np.float32),
        obs=pd.DataFrame(index=pd.Index([f"tile_{i}" for i in range(len(xy))])),
        var=pd.DataFrame(index=pd.Index([f"GENE{k}" for k in range(genes)])),
    )
    a.var["cv_r"] = np.float32(0.2)
    a.obs["tile_size"] = np.float32(side)
    a.obsm["spatial"] = xy
    a.write_h5ad(out / f"{slide.stem}.h5ad")
    return len(xy)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", type=int, default=50, help="planted genes per slide")
    ap.add_argument("--out", type=Path, help="viewer folder to keep (default: a temporary one)")
    args = ap.parse_args()
    from spade_st.pl.viewer import ViewConfig, write_viewers

    slides = [SHARED / "wsi_small" / s for s in SLIDES]
    if not all(s.is_file() for s in slides):
        sys.exit(f"wsi_small slides not found in {SHARED / 'wsi_small'}; set SPADE_ST_SHARED_DATA")
    with tempfile.TemporaryDirectory() as tmp:
        pred = Path(tmp) / "pred"
        pred.mkdir()
        tiles = sum(plant(s, pred, args.genes) for s in slides)
        out = args.out or Path(tmp) / "view"
        cfg = ViewConfig(wsi=slides, predictions=pred, out=out, pixel_size_um=PIXEL_SIZE_UM, progress=False)
        t0 = time.perf_counter()
        write_viewers(cfg)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_viewers(cfg)
        rerun = time.perf_counter() - t0
        files = [p for p in Path(out).rglob("*") if p.is_file()]
        jpgs = [p for p in files if p.suffix == ".jpg"]
        mb = sum(p.stat().st_size for p in files) / 1e6
    print(f"view of {len(slides)} slides ({tiles} planted tiles x {args.genes} genes): first write {first:.1f} s, "
          f"rerun {rerun:.2f} s, {len(jpgs)} JPEG tiles, {mb:.1f} MB")  # fmt: skip
    last_line(first_s=first, rerun_s=rerun, ratio=first / rerun, jpeg_tiles=len(jpgs), mb=mb, peak_rss_gb=peak_rss_gb())


if __name__ == "__main__":
    main()
