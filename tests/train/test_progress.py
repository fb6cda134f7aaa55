"""Progress in a log file or a notebook without widgets: plain lines, at most one per LOG_INTERVAL across all bars
(checked on a fake clock), the final line of the outermost bar only, and no carriage returns or cursor moves."""

from __future__ import annotations

import io
import types
import warnings

import numpy as np
import pytest

import spade_st._progress as P


class _Clock:
    """A stand-in for ``time`` in spade_st._progress: ``monotonic()`` returns ``now``, advanced by the test."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(P, "time", types.SimpleNamespace(monotonic=c.monotonic))
    monkeypatch.setattr(P, "_CLOCK", {"last": None}, raising=False)  # no line printed yet in this test
    monkeypatch.setattr(P.sys.stderr, "isatty", lambda: False, raising=False)
    return c


def _lines(text: str) -> list[str]:
    assert "\r" not in text and "\x1b[" not in text, repr(text)  # whole lines, no redraws or cursor moves
    assert "\n\n" not in text, repr(text)  # no blank line after a bar
    return text.splitlines()


def test_nested_bars_print_at_most_one_line_per_interval(clock):
    """20 epochs x 10 steps, one fake second per step: 200 s -> a handful of lines, not a line per epoch."""
    out = io.StringIO()
    epochs = P.progress(range(20), desc="pretrain", unit="epoch", file=out, mininterval=0)
    for e in epochs:
        for _ in P.progress(range(10), desc=f"epoch {e}", unit="step", leave=False, file=out, mininterval=0):
            clock.now += 1.0
        epochs.set_postfix_str(f"loss {e}")
    lines = _lines(out.getvalue())
    assert len(lines) <= 200 // P.LOG_INTERVAL + 2, lines  # one per interval, the first one and the final one
    assert lines[-1].startswith("pretrain: 20/20 epoch") and "loss 19" in lines[-1], lines


def test_a_line_every_interval_and_never_two_within_one(clock):
    out = io.StringIO()
    stamps = []
    with P.progress(total=300, desc="extract", unit="patch", file=out, mininterval=0) as bar:
        for _ in range(300):
            clock.now += 0.5
            before = out.getvalue().count("\n")
            bar.update(1)
            if out.getvalue().count("\n") > before:
                stamps.append(clock.now)
    lines = _lines(out.getvalue())
    assert 150 // P.LOG_INTERVAL <= len(lines) <= 150 // P.LOG_INTERVAL + 2, lines
    gaps = np.diff(stamps[:-1])  # the final line is the one exception to the interval
    assert (gaps >= P.LOG_INTERVAL).all(), gaps
    assert lines[-1].startswith("extract: 300/300 patch"), lines


def test_trainer_prints_one_line_for_a_whole_fit(clock, capsys):
    """The epoch loop's bars (epochs, and the steps of each epoch) in a log: no line per epoch."""
    from test_loop import _model, _planted, _trainer

    feats, genes, tr, va = _planted()
    _trainer(_model(), epochs=8, progress=True).fit(feats, genes, tr, va)
    lines = _lines(capsys.readouterr().err)
    assert len(lines) <= 2 and lines[-1].startswith("pretrain: 8/8 epoch"), lines


def test_notebook_without_ipywidgets_prints_lines_and_no_iprogress_warning(clock, monkeypatch):
    monkeypatch.setattr(P, "in_notebook", lambda: True, raising=False)
    monkeypatch.setattr(P, "_has_widgets", lambda: False, raising=False)
    monkeypatch.setitem(P.sys.modules, "ipykernel", types.ModuleType("ipykernel"))  # what the old check looked at
    out = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an "IProgress not found" TqdmWarning would raise here
        for _ in P.progress(range(5), desc="embed", unit="file", file=out, mininterval=0):
            clock.now += 1.0
    assert _lines(out.getvalue())[-1].startswith("embed: 5/5 file")
