"""Paths of the HEST-1k on-disk layout and the per-sample metadata table."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import _keys as K
from .._atomic import atomic_write_text, file_lock
from .._validation import SpadeInputError


@dataclass(frozen=True)
class Layout:
    """Where each file of a sample lives under ``root`` (HEST-1k's folder names)."""

    root: Path

    def st(self, sid: str) -> Path:
        return self.root / K.ST_DIR / f"{sid}.h5ad"

    def wsi(self, sid: str) -> Path:
        return self.root / K.WSI_DIR / f"{sid}.tif"

    def patches(self, sid: str) -> Path:
        return self.root / K.PATCH_DIR / f"{sid}.h5"

    def meta_json(self, sid: str) -> Path:
        return self.root / K.META_DIR / f"{sid}.json"

    @property
    def metadata_csv(self) -> Path:
        return self.root / K.METADATA_CSV

    @property
    def lock(self) -> Path:
        return self.root / ".spade-st.lock"

    def table_path(self) -> Path | None:
        """``metadata.csv`` if present, else HEST's ``HEST_v1_1_0.csv``, else None."""
        for name in (K.METADATA_CSV, K.HEST_TABLE):
            p = self.root / name
            if p.is_file():
                return p
        return None


def read_metadata(root: Path | str) -> pd.DataFrame:
    """Read the sample table of ``root`` (``metadata.csv`` or ``HEST_v1_1_0.csv``), indexed by ``id``."""
    lay = Layout(Path(root))
    path = lay.table_path()
    if path is None:
        msg = (
            f"no sample table in {root}: expected {K.METADATA_CSV} (or HEST's {K.HEST_TABLE}); "
            "create the root with `spade-st convert ...` or `spade-st demo-data`"
        )
        raise FileNotFoundError(msg)
    try:
        df = pd.read_csv(path, encoding="utf-8-sig", dtype={"id": str, "patient": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        msg = f"cannot parse the sample table {path}: {err}"
        raise SpadeInputError(msg) from err
    df.columns = [str(c).strip() for c in df.columns]
    if "id" not in df.columns:
        msg = f"sample table {path} has no 'id' column (columns: {list(df.columns)[:8]}...); HEST tables name it 'id'"
        raise SpadeInputError(msg)
    dup = df["id"][df["id"].duplicated()].unique()
    if len(dup):
        msg = f"sample table {path} lists {len(dup)} id(s) more than once: {', '.join(map(str, dup[:5]))}; keep one row per sample"
        raise SpadeInputError(msg)
    return df.set_index("id", drop=False)


def _write_table(path: Path, df: pd.DataFrame) -> None:
    cols = [c for c in K.METADATA_COLUMNS if c in df.columns] + [c for c in df.columns if c not in K.METADATA_COLUMNS]
    buf = io.StringIO()
    df[cols].to_csv(buf, index=False)
    atomic_write_text(path, buf.getvalue())


def upsert_metadata_row(root: Path | str, row: dict, position: int | None = None) -> None:
    """Add or replace the row of ``row['id']`` in ``ROOT/metadata.csv`` (atomically, under a lock).

    A replaced row keeps its place; a new row goes to ``position`` (default: the end).
    """
    lay = Layout(Path(root))
    with file_lock(lay.lock):
        df = read_metadata(root).reset_index(drop=True) if lay.metadata_csv.is_file() else pd.DataFrame(columns=["id"])
        hit = np.flatnonzero(df["id"].astype(str).to_numpy() == str(row["id"]))
        if hit.size:
            position = int(hit[0])
            df = df.drop(index=df.index[hit])
        new = pd.DataFrame([{k: (np.nan if v is None else v) for k, v in row.items()}])
        pos = len(df) if position is None else min(max(position, 0), len(df))
        df = new if df.empty else pd.concat([df.iloc[:pos], new, df.iloc[pos:]], ignore_index=True)
        _write_table(lay.metadata_csv, df)


def remove_metadata_row(root: Path | str, sid: str) -> int | None:
    """Drop ``sid`` from ``ROOT/metadata.csv``; returns its former position, or None if it was not there."""
    lay = Layout(Path(root))
    if not lay.metadata_csv.is_file():
        return None
    with file_lock(lay.lock):
        df = read_metadata(root).reset_index(drop=True)
        keep = df["id"].astype(str).to_numpy() != str(sid)
        if keep.all():
            return None
        _write_table(lay.metadata_csv, df[keep])
        return int(np.flatnonzero(~keep)[0])
