"""Progress bars: one bar per stage, in a terminal, a notebook or a log file.

Where ``progress`` draws:

* a terminal (stderr is a tty): tqdm, bars inside another bar drawn below it and cleared when done;
* a Jupyter notebook with ipywidgets: one widget per stage; a bar opened inside another one (the steps of an
  epoch, the patches of a sample) is not shown;
* anywhere else (a log file, a notebook without ipywidgets): plain lines, no carriage returns and no cursor
  moves. All bars share one clock: at most one line per :data:`LOG_INTERVAL` seconds, whichever bar is
  running, plus the final line of each outermost bar (``desc: n/total unit, rate, elapsed, postfix``). A bar
  inside another one never prints its own first or final line, so an epoch loop does not print a line per
  epoch.
"""

from __future__ import annotations

import sys
import time
import weakref

from tqdm.std import tqdm as _tqdm

LOG_INTERVAL = 30.0  #: seconds between plain lines (log files, notebooks without ipywidgets)

_OPEN: weakref.WeakSet = weakref.WeakSet()  #: bars made by ``progress`` (closed ones have ``disable`` set)
_CLOCK = {"last": None}  #: time.monotonic() of the last plain line of any bar (None: none printed yet)


class _LineBar(_tqdm):
    """tqdm that prints plain lines (no carriage returns, no cursor moves), rate-limited by a shared clock.

    Parameters
    ----------
    *args, **kwargs
        tqdm's; ``nested=True`` marks a bar opened inside another one (no first or final line of its own).
    """

    def __init__(self, *args, nested: bool = False, **kwargs):
        self._nested = nested
        self._printed_done = False
        kwargs.setdefault("mininterval", 1.0)
        kwargs["leave"] = True
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None, **_kw):
        """Print one line when the shared clock allows it (``LOG_INTERVAL`` since the last line of any bar)."""
        last = _CLOCK["last"]
        if last is not None and time.monotonic() - last < LOG_INTERVAL:
            return True
        self._line()
        return True

    def _line(self) -> None:
        _CLOCK["last"] = time.monotonic()
        self._printed_done = self.total is not None and self.n >= self.total
        d = self.format_dict
        rate = d.get("rate") or (self.n / d["elapsed"] if d["elapsed"] else 0)
        total = f"/{self.total}" if self.total else ""
        post = f", {d['postfix']}" if d.get("postfix") else ""
        self.fp.write(
            f"{self.desc or 'progress'}: {self.n}{total} {self.unit}, {rate:.3g} {self.unit}/s, "
            f"{self.format_interval(d['elapsed'])} elapsed{post}\n"
        )
        self.fp.flush()

    def moveto(self, n):
        """No cursor moves: lines only."""

    def clear(self, nolock=False):
        """Nothing to clear: lines only."""

    def close(self):
        """Print the final state of an outermost bar (once), then retire the bar without tqdm's blank line."""
        if self.disable:
            return
        if not self._nested and not self._printed_done:
            self._line()
        self.disable = True
        self._decr_instances(self)


def in_notebook() -> bool:
    """True inside a Jupyter kernel (an IPython shell of an ``IPKernelApp``), not in a terminal IPython."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # an IPython too old or half imported: not a kernel we can tell
        return False
    if shell is None:
        return False
    return type(shell).__name__ == "ZMQInteractiveShell" or "IPKernelApp" in getattr(shell, "config", {})


def _has_widgets() -> bool:
    from importlib.util import find_spec

    return find_spec("ipywidgets") is not None


def _quiet_autonotebook() -> None:
    """Import ``tqdm.autonotebook`` once with its "IProgress not found" warning silenced.

    In a notebook without ipywidgets that warning is all a library importing ``tqdm.auto`` (huggingface_hub,
    through timm) would print; ``progress`` draws plain lines there and needs no widget.
    """
    if "tqdm.autonotebook" in sys.modules or not in_notebook() or _has_widgets():
        return
    import warnings

    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)
        import tqdm.autonotebook  # noqa: F401


_quiet_autonotebook()


def progress(*args, **kwargs):
    """A progress bar with tqdm's arguments, drawn as the module docstring says for where it runs.

    Parameters
    ----------
    *args, **kwargs
        tqdm's (``iterable``, ``total``, ``desc``, ``unit``, ``disable``, ...).

    Returns
    -------
    tqdm.std.tqdm
        A tqdm (or a subclass): iterate it, ``update`` it, close it or use it as a context manager.
    """
    if kwargs.get("disable"):
        return _tqdm(*args, **kwargs)
    _quiet_autonotebook()
    nested = any(not getattr(b, "disable", True) for b in list(_OPEN))
    if in_notebook() and _has_widgets():
        if nested:
            return _tqdm(*args, **{**kwargs, "disable": True})
        from tqdm.notebook import tqdm as _widget

        bar = _widget(*args, **kwargs)
    elif sys.stderr.isatty() and not in_notebook():
        if nested:
            kwargs.setdefault("leave", False)  # drawn below its parent, cleared when done
        bar = _tqdm(*args, **kwargs)
    else:
        for k in ("leave", "position"):
            kwargs.pop(k, None)
        kwargs.setdefault("file", sys.stderr)
        bar = _LineBar(*args, nested=nested, **kwargs)
    _OPEN.add(bar)
    return bar
