"""The allocator tuning keeps freed large blocks in the process: re-allocating them takes no new page faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, resource, sys
import numpy as np
from spade_st.train._malloc import keep_freed_memory
applied = keep_freed_memory()
def faults_of_one_step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(50_000_000 // 8)  # 50 MB: above glibc's largest mmap threshold
    del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_one_step()
print(json.dumps({"applied": applied, "again": keep_freed_memory(), "faults": faults_of_one_step()}))
"""


def _run(tune: str) -> dict:
    env = os.environ | {"SPADE_ST_MALLOC_TUNE": tune}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_freed_blocks_are_reused_without_page_faults():
    tuned, plain = _run("1"), _run("0")
    assert tuned["applied"] and tuned["again"] and not plain["applied"]
    # untuned, every step faults the block in again (>= 24 faults even with 2 MB transparent huge pages)
    assert plain["faults"] >= 50_000_000 // (2 << 20)
    assert tuned["faults"] <= plain["faults"] // 10  # tuned, the freed block is reused
