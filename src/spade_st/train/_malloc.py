"""Keep freed memory inside the process during CPU training (glibc only), so big buffers are not re-faulted.

A training step on CPU allocates and frees the same large tensors every step (the gene head's weight
gradient alone is E x genes x 256 floats, 130 MB at the paper's shapes; the gathered batch is another 65 MB).
glibc serves every allocation above 32 MiB with a fresh ``mmap`` and unmaps it on free, so each step pays a
page fault (and a page of zeroing) for every 4 kB of them again: a quarter to a third of a step's time on a
2-core machine. With ``mmap`` off and a high trim threshold, freed blocks stay in the heap and the next step
reuses them. Peak RSS is unchanged (the same blocks are live at the peak); memory freed after the peak is
returned only above the trim threshold.

Set ``SPADE_ST_MALLOC_TUNE=0`` to leave the allocator alone (or preload jemalloc/tcmalloc instead).
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_BYTES = 1 << 30
_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for a training loop (once per process); True when it was applied.

    No-op (False) off Linux, without glibc's ``mallopt``, or with ``SPADE_ST_MALLOC_TUNE=0``.
    """
    if "applied" in _state:
        return _state["applied"]
    applied = False
    if os.environ.get("SPADE_ST_MALLOC_TUNE", "1") != "0" and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            applied = bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES)) and bool(mallopt(_M_MMAP_MAX, 0))
    _state["applied"] = applied
    return applied
