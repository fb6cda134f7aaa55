"""Cost of ``spade-st finetune`` at the her2st bench's size: cached prefix vs the whole network, one run.

Both modes fine-tune efficientnet_lite0's last ``--train-blocks`` blocks on the her2st sections with C4 held
out (the split ``pretrain`` makes of the other four), 8 dihedral views, batch 128. Each mode runs in its own
process (so its peak RSS is its own); seconds per epoch is the wall time between the first and the second
epoch's checkpoint (one full epoch: training steps and validation), after any one-time setup. The prefix
cache is built first, in a separate process, and its time is printed as the one-time cost of the cached mode.
Last line: ``cached_s_per_epoch=… whole_s_per_epoch=… speedup=… cached_peak_rss_gb=… whole_peak_rss_gb=…``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import CACHE, her2st_root, last_line, peak_rss_gb


def _cfg(out: Path, cache: Path, cached: bool, blocks: int, epochs: int):
    from spade_st.train.finetune_config import FinetuneConfig

    return FinetuneConfig(
        data=her2st_root(), out=out, exclude=["C4"], val_fraction=0.2, train_blocks=blocks, views=8,
        epochs=epochs, early_stop=0, cache_prefix=cached, cache_dir=cache, progress=False,
    )  # fmt: skip


def child(mode: str, out: Path, cache: Path, blocks: int) -> None:
    """One mode: ``cache`` (build the prefix cache only) or ``cached`` / ``whole`` (two epochs, timed)."""
    from spade_st.train import finetune as ft

    if mode == "cache":
        cfg = _cfg(out, cache, True, blocks, 1)
        t = time.perf_counter()
        _, _, spots = ft._setup(cfg)
        ft._Net(cfg, __import__("torch").device("cpu")).prepare(spots, progress=False)
        print(json.dumps({"seconds": time.perf_counter() - t, "rss": peak_rss_gb()}))
        return
    stamps = []
    real = ft.save_state

    def timed(*a, **kw):
        stamps.append(time.perf_counter())
        real(*a, **kw)

    ft.save_state = timed
    ft.finetune(_cfg(out, cache, mode == "cached", blocks, 2))
    print(json.dumps({"epoch_s": stamps[1] - stamps[0], "rss": peak_rss_gb()}))


def _run(mode: str, out: Path, cache: Path, blocks: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--out", str(out), "--cache", str(cache)]
    res = subprocess.run([*cmd, "--train-blocks", str(blocks)], capture_output=True, text=True, check=False)
    if res.returncode:
        sys.exit(f"{mode} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-blocks", type=int, default=2)
    p.add_argument("--cache", type=Path, default=CACHE / "finetune-prefix", help="prefix cache (reused)")
    p.add_argument("--child", choices=["cache", "cached", "whole"], help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.out, args.cache, args.train_blocks)
        return
    with tempfile.TemporaryDirectory() as tmp:
        c = _run("cache", Path(tmp) / "c", args.cache, args.train_blocks)
        a = _run("cached", Path(tmp) / "a", args.cache, args.train_blocks)
        b = _run("whole", Path(tmp) / "b", args.cache, args.train_blocks)
    print(f"prefix cache (one-time, 8 views; 0 s when reused): {c['seconds']:.0f} s, peak RSS {c['rss']:.2f} GB")
    last_line(
        cached_s_per_epoch=a["epoch_s"],
        whole_s_per_epoch=b["epoch_s"],
        speedup=b["epoch_s"] / a["epoch_s"],
        cached_peak_rss_gb=a["rss"],
        whole_peak_rss_gb=b["rss"],
    )


if __name__ == "__main__":
    main()
