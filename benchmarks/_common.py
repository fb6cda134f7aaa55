"""Helpers shared by the benchmarks: peak RSS, the her2st root, float16 .npy writing, key=value output."""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPADE_ST_SHARED_DATA", REPO.parent / "shared" / "data"))
CACHE = Path(os.environ.get("SPADE_ST_BENCH_CACHE", REPO / "runs" / "bench-cache"))


def peak_rss_gb() -> float:
    """Peak resident set size of this process's address space so far, in GB.

    Linux: ``VmHWM`` from /proc/self/status. Not ``getrusage(RUSAGE_SELF).ru_maxrss``: a process started by
    ``subprocess`` (vfork + exec) inherits its parent's peak into that figure, so a fresh child would report
    the parent's RSS whenever it is the larger.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def write_npy_f16(path: Path, shape: tuple[int, int], chunks) -> None:
    """Write a float16 .npy of ``shape`` by appending row chunks through a file handle (no memory map, so no
    RSS growth however big the file)."""
    import numpy as np

    from spade_st.train.store import _npy_header

    with open(path, "wb") as fh:
        _npy_header(fh, "float16", shape)
        for c in chunks:
            fh.write(np.ascontiguousarray(c, dtype=np.float16).tobytes())


def her2st_root() -> Path:
    """The five real her2st sections in HEST layout (converted once into the cache)."""
    from spade_st.datasets.her2st_subset import convert_her2st_subset

    src = SHARED / "her2st_subset"
    if not src.is_dir():
        sys.exit(f"her2st data not found at {src}; set SPADE_ST_SHARED_DATA")
    return convert_her2st_subset(src, CACHE / "her2st", progress=False)


def last_line(**kv) -> None:
    """Print the figures as key=value pairs on the last line."""
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in kv.items()))
