"""Progress bars: tqdm on a terminal; whole lines, at most one per ``log_interval`` seconds, in a log file.

A bar redrawn with carriage returns turns a log file into hundreds of control-sequence fragments, so when
stderr is not a terminal every update is written as one plain line instead (``desc: n/total unit, rate,
elapsed<remaining, postfix``).
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm as _auto
from tqdm.std import tqdm as _tqdm

LOG_INTERVAL = 30.0  #: seconds between lines when stderr is not a terminal


class _LineBar(_tqdm):
    """tqdm that prints plain lines (no carriage returns, no cursor moves), rate-limited."""

    def __init__(self, *args, **kwargs):
        self._last_line = 0.0
        self._printed_done = False
        kwargs.setdefault("mininterval", 1.0)
        kwargs["leave"] = True
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None, **_kw):
        now = time.monotonic()
        done = self.total is not None and self.n >= self.total
        if not done and self._last_line and now - self._last_line < LOG_INTERVAL:
            return True
        if done and self._printed_done:
            return True
        self._printed_done = done
        self._last_line = now
        d = self.format_dict
        rate = d.get("rate") or (self.n / d["elapsed"] if d["elapsed"] else 0)
        total = f"/{self.total}" if self.total else ""
        post = f", {d['postfix']}" if d.get("postfix") else ""
        self.fp.write(
            f"{self.desc or 'progress'}: {self.n}{total} {self.unit}, {rate:.3g} {self.unit}/s, "
            f"{self.format_interval(d['elapsed'])} elapsed{post}\n"
        )
        self.fp.flush()
        return True

    def close(self):
        if not self.disable and not self._printed_done:
            self._last_line = 0.0  # the final state, always
            self.display()
            self._printed_done = True
        super().close()


def progress(*args, **kwargs):
    """A progress bar (tqdm's arguments): tqdm on a terminal or in a notebook (a widget where ipywidgets is
    installed), plain lines when stderr is redirected to a file."""
    if kwargs.get("disable") or "ipykernel" in sys.modules:
        return _auto(*args, **kwargs)
    if not sys.stderr.isatty():
        for k in ("leave", "position"):
            kwargs.pop(k, None)
        kwargs.setdefault("file", sys.stderr)
        return _LineBar(*args, **kwargs)
    return _auto(*args, **kwargs)
