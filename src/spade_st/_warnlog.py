"""The warnings a run produced, kept in ``RUN/warnings.json`` for ``spade-st report``.

``spade-st run`` and ``spade-st demo`` wrap each stage in :func:`record_warnings`: every warning shown while it
runs (a :class:`~spade_st._validation.DataWarning` "spade-st: warning:" line, or another ``UserWarning``) is
still shown as before and is also added to the file, once per stage, category and message. A resumed run adds
to the same file, so the warnings of stages that were done before the resume stay listed. The report lists
them under "Warnings" (:func:`read_warnings`).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

from ._atomic import atomic_write_json

FILE = "warnings.json"


def read_warnings(run: Path | str) -> list[dict[str, str]]:
    """``[{"stage", "category", "message"}, ...]`` of ``RUN/warnings.json``; ``[]`` when there is none (or it is
    not readable)."""
    path = Path(run) / FILE
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return []
    keys = ("stage", "category", "message")
    return [{k: str(r.get(k, "")) for k in keys} for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def add_warnings(run: Path | str, stage: str, caught: list[warnings.WarningMessage]) -> None:
    """Add the ``UserWarning``s of ``caught`` to ``RUN/warnings.json`` (atomic; each one once; one writer)."""
    new = [
        {"stage": stage, "category": w.category.__name__, "message": str(w.message).strip()}
        for w in caught
        if issubclass(w.category, UserWarning)
    ]
    if not new:
        return
    rows = read_warnings(run)  # one writer: the run's main process
    seen = {tuple(r.values()) for r in rows}
    for r in new:
        if tuple(r.values()) not in seen:
            seen.add(tuple(r.values()))
            rows.append(r)
    atomic_write_json(Path(run) / FILE, rows)


@contextlib.contextmanager
def record_warnings(run: Path | str | None, stage: str) -> Iterator[list[warnings.WarningMessage]]:
    """Record the warnings shown inside the block into ``RUN/warnings.json`` (``run=None``: record nothing).

    The warnings are shown as they would be without it (same filters, same printing): the block only listens
    to ``warnings.showwarning``. They are written when the block ends, also when it raises.
    """
    caught: list[warnings.WarningMessage] = []
    with warnings.catch_warnings():  # restores showwarning (and the filters) afterwards
        shown = warnings.showwarning

        def listen(message, category, filename, lineno, file=None, line=None):
            caught.append(warnings.WarningMessage(message, category, filename, lineno, file, line))
            shown(message, category, filename, lineno, file, line)

        warnings.showwarning = listen
        try:
            yield caught
        finally:
            if run is not None:
                add_warnings(run, stage, caught)
