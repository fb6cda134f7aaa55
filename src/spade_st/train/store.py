"""A training run's data packed into contiguous arrays read row by row with pread (not one file per spot).

``features.npy`` (N, D) and ``expression.npy`` (N, G) are contiguous ``.npy`` files read row-batch by
row-batch (:class:`RowFile`), so millions of spots train in bounded RAM; ``index.csv`` says which sample, barcode and group each row is.
Built sample by sample; ``store.json`` (written last) marks a finished store and records what it holds, so a
rerun with the same inputs reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._atomic import atomic_write_json, atomic_write_text
from .._progress import progress as tqdm
from .._validation import SpadeInputError
from ..genes import smooth_spatial
from ..io.features import read_features

MANIFEST = "store.json"


class RowFile:
    """Rows of a 2-D ``.npy`` file read with ``pread`` (no mmap): the page cache holds the data, not the process.

    A memory map would count every touched page in the process's resident set, so an epoch over a store larger
    than RAM would grow RSS to the file size; explicit reads keep RSS at the size of a batch.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(fh)
            self.offset = fh.tell()
        if fortran or len(shape) != 2:
            msg = f"{self.path} must be a C-ordered 2-D array"
            raise SpadeInputError(msg)
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_bytes = self.shape[1] * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, slice):
            idx = np.arange(*idx.indices(self.shape[0]))
        idx = np.asarray(idx, dtype=np.int64).ravel()
        out = np.empty((len(idx), self.shape[1]), self.dtype)
        if not len(idx):
            return out
        order = np.argsort(idx, kind="stable")
        sidx = idx[order]
        if sidx[0] < 0 or sidx[-1] >= self.shape[0]:
            msg = f"row index out of range for {self.path} with {self.shape[0]} rows"
            raise IndexError(msg)
        starts = np.flatnonzero(np.diff(sidx, prepend=sidx[0] - 2) != 1)  # runs of consecutive rows: one read each
        lengths = np.diff(np.append(starts, len(sidx)))
        for pos, n in zip(starts.tolist(), lengths.tolist(), strict=True):
            dst = order[pos : pos + n]
            if n == 1 or (dst[-1] - dst[0] == n - 1 and (np.diff(dst) == 1).all()):
                self._read(int(sidx[pos]), n, out[dst[0] : dst[0] + n])  # straight into place, no copy
            else:
                tmp = np.empty((n, self.shape[1]), self.dtype)
                self._read(int(sidx[pos]), n, tmp)
                out[dst] = tmp
        return out

    def _read(self, row: int, n: int, dst: np.ndarray) -> None:
        """Read ``n`` rows from ``row`` into the C-contiguous array ``dst`` (one ``preadv``, no temporary bytes)."""
        want = n * self.row_bytes
        got = os.preadv(self._fd, [memoryview(dst).cast("B")], self.offset + row * self.row_bytes)
        if got != want:
            msg = f"{self.path} is shorter than its header says (truncated?); rebuild it (delete the store folder)"
            raise SpadeInputError(msg)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_fd"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._fd = os.open(self.path, os.O_RDONLY)

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)


class RowSubset:
    """Rows ``rows`` of a row store, indexable like an array: hands a subset to code that reads in chunks."""

    def __init__(self, base, rows):
        self.base, self.rows = base, np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), self.base.shape[1])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx) -> np.ndarray:
        return self.base[self.rows[idx]]


@dataclass
class Store:
    """Open training arrays (rows read with pread, never memory-mapped)."""

    folder: Path
    features: RowFile
    expression: RowFile
    index: pd.DataFrame

    def __len__(self) -> int:
        return len(self.index)

    @property
    def encoder(self) -> str | None:
        """The encoder whose features the store holds (from its manifest)."""
        return json.loads((self.folder / MANIFEST).read_text()).get("spec", {}).get("encoder")

    def rows_of(self, sample_ids) -> np.ndarray:
        return np.flatnonzero(self.index["sample"].isin(list(sample_ids)).to_numpy())


def _npy_header(fh, dtype: str, shape: tuple[int, int]) -> None:
    """Write a ``.npy`` header for a C-ordered array of ``shape``; the rows are appended after it."""
    header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(fh, header)


def _spec_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def open_store(folder: Path | str) -> Store:
    folder = Path(folder)
    return Store(
        folder,
        RowFile(folder / "features.npy"),
        RowFile(folder / "expression.npy"),
        pd.read_csv(folder / "index.csv", dtype={"sample": str, "barcode": str, "group": str}),
    )


def build_store(
    samples,
    features_dir: Path | str,
    panel,
    folder: Path | str,
    encoder: str,
    group_key: str = "organ",
    dtype: str = "float32",
    progress: bool = True,
    smoothing: float = 0.0,
) -> Store:
    """Pack features and panel expression of ``samples`` into ``folder`` (reused when already built).

    ``smoothing`` > 0 stores each spot's panel expression averaged over the sample's spots within that many
    spot pitches (:func:`~spade_st.genes.smooth_spatial`; 1.5 = the 3 x 3 neighbourhood of a square grid).
    """
    folder, features_dir = Path(folder), Path(features_dir)
    spec = {
        "samples": [s.id for s in samples],
        "genes": list(panel.genes),
        "mode": panel.mode,
        "encoder": encoder,
        "features_dir": str(features_dir.resolve()),
        "group_key": group_key,
        "dtype": dtype,
    }
    if smoothing:
        spec["smoothing"] = float(smoothing)
    h = _spec_hash(spec)
    man = folder / MANIFEST
    if man.is_file() and json.loads(man.read_text()).get("hash") == h:
        return open_store(folder)
    # check every feature file before writing anything
    sizes, problems = [], []
    for s in samples:
        p = features_dir / f"{s.id}.h5"
        if not p.is_file():
            problems.append(f"{s.id}: no features at {p}")
            sizes.append(0)
            continue
        fs = read_features(p, require_complete=True)
        if fs.attrs.get("encoder") not in (None, encoder):
            problems.append(f"{s.id}: features are from {fs.attrs.get('encoder')!r}, expected {encoder!r}")
        sizes.append(len(fs))
    if problems:
        msg = (
            "cannot pack the training data:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + (f"\nrun `spade-st extract --data ROOT --encoder {encoder} --out FEATS` first")
        )
        raise SpadeInputError(msg)
    if folder.exists():
        shutil.rmtree(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n = sum(sizes)
    rows, dim = [], None
    with open(tmp / "features.npy", "wb") as f_feat, open(tmp / "expression.npy", "wb") as f_expr:
        for s, _ in zip(tqdm(samples, desc="pack store", disable=not progress), sizes, strict=True):
            fs = read_features(features_dir / f"{s.id}.h5")
            if dim is None:
                dim = fs.features.shape[1]
                _npy_header(f_feat, dtype, (n, dim))
                _npy_header(f_expr, dtype, (n, len(panel)))
            if fs.features.shape[1] != dim:
                msg = f"{s.id}: features are {fs.features.shape[1]}-d, earlier samples {dim}-d"
                raise SpadeInputError(msg)
            if not np.isfinite(fs.features).all():
                msg = f"{s.id}: features contain NaN/Inf; re-extract with --overwrite"
                raise SpadeInputError(msg)
            a = s.adata
            bc = fs.barcode if fs.barcode is not None else np.asarray(a.obs_names)
            pos = pd.Index(a.obs_names.astype(str)).get_indexer(pd.Index(bc.astype(str)))
            if (pos < 0).any():
                msg = f"{s.id}: {int((pos < 0).sum())} feature barcodes are not spots of the sample; re-extract"
                raise SpadeInputError(msg)
            # appended through file handles, not a memory map: RSS stays at one sample however big the store
            f_feat.write(np.ascontiguousarray(fs.features, dtype=dtype).tobytes())
            if smoothing:  # over all of the sample's spots (neighbours without a patch count too)
                expr = smooth_spatial(panel.transform(a, sample_id=s.id), a.obsm["spatial"], smoothing)[pos]
            else:
                expr = panel.transform(a[pos], sample_id=s.id)
            f_expr.write(np.ascontiguousarray(expr, dtype=dtype).tobytes())
            group = str(s.meta.get(group_key)) if s.meta.get(group_key) is not None else "unknown"
            rows.append(pd.DataFrame({"sample": s.id, "barcode": bc.astype(str), "group": group, "patient": s.patient}))
        for f in (f_feat, f_expr):
            f.flush()
            os.fsync(f.fileno())
    pd.concat(rows, ignore_index=True).to_csv(tmp / "index.csv", index=False)
    atomic_write_text(tmp / "panel_missing.json", json.dumps(panel.missing, indent=1))
    atomic_write_json(tmp / MANIFEST, {"hash": h, "spec": spec, "n": n})
    os.replace(tmp, folder)
    return open_store(folder)
