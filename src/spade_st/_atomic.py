"""Atomic file writes: temp file in the same folder, fsync, rename.

A killed process leaves at most a ``.tmp-*`` file that no reader trusts, never a half-written output.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

TMP_PREFIX = ".tmp-"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_sibling(path: Path | str, suffix: str = "") -> Path:
    """A fresh temporary path beside ``path`` (same filesystem, so rename is atomic)."""
    p = Path(path)
    return p.with_name(f"{TMP_PREFIX}{p.name}.{uuid.uuid4().hex[:8]}{suffix or p.suffix}")


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temp path; on success fsync it and rename it onto ``path``, on error delete it."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(final)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: Path | str, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_save_safetensors(
    path: Path | str, tensors: dict, metadata: dict[str, str] | None = None, fault_point: str | None = None
) -> None:
    """Write torch ``tensors`` as a safetensors file, atomically and byte-reproducibly.

    safetensors serialises its ``__metadata__`` map in an order that changes from process to process (a Rust
    hash map), so the same tensors could give different files. The header is re-written with sorted keys: the
    same JSON content has the same length, so the data offsets stay valid and readers see the same file.
    ``fault_point``: a kill point (``_fault``) between writing the temp file and replacing ``path``.
    """
    from safetensors.torch import save

    from ._fault import maybe_die

    data = save(tensors, metadata=metadata)
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    if len(header) > n:  # never seen: safetensors writes compact JSON; keep its bytes rather than break the file
        header = data[8 : 8 + n]
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data[:8] + header.ljust(n, b" ") + data[8 + n :])
        if fault_point:
            maybe_die(fault_point)


def plain(obj) -> dict:
    """The JSON-ready form of a config (a dataclass or a mapping): paths as strings, NumPy values as Python
    values. The one way spade-st serialises its configs."""
    from dataclasses import asdict, is_dataclass

    return json.loads(json.dumps(asdict(obj) if is_dataclass(obj) else dict(obj), default=_json_default))


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    msg = f"cannot write {type(o).__name__} to JSON"
    raise TypeError(msg)


@contextlib.contextmanager
def file_lock(path: Path | str) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (created if missing), for read-modify-write of shared files."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
