"""Fault injection for the kill-and-resume tests: ``SPADE_ST_FAULT=<point>`` SIGKILLs the process there.

Points are plain strings such as ``epoch2-step1`` (before that training step) or ``checkpoint3`` (after the
epoch-3 checkpoint's temp file is written, before it replaces the previous one). Unset in normal use.
"""

from __future__ import annotations

import os
import signal

ENV = "SPADE_ST_FAULT"


def maybe_die(point: str) -> None:
    """SIGKILL this process if ``$SPADE_ST_FAULT`` names ``point``."""
    if os.environ.get(ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)
