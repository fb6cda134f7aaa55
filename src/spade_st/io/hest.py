"""Reading a HEST-1k-layout root: samples with AnnData plus lazy patch and WSI access."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .. import _keys as K
from .._validation import LayoutError
from .layout import Layout, read_metadata
from .wsi import WSI, open_wsi


def _decode(arr) -> np.ndarray:
    a = np.asarray(arr).reshape(-1)
    if a.dtype.kind in ("S", "O"):
        return np.array([x.decode() if isinstance(x, bytes) else str(x) for x in a], dtype=object)
    return a.astype(str).astype(object)


def read_patch_barcodes(path: Path | str) -> np.ndarray:
    """Barcodes of a patch h5 (HEST stores them as (N, 1) bytes; we write (N,) strings)."""
    with h5py.File(path, "r") as f:
        return _decode(f[K.PATCH_BARCODE][()])


@dataclass
class PatchFile:
    """Lazy view of ``patches/<id>.h5``: ``img`` (N,224,224,3) uint8, ``coords`` (N,2), ``barcode`` (N,)."""

    path: Path

    def __len__(self) -> int:
        with h5py.File(self.path, "r") as f:
            return int(f[K.PATCH_IMG].shape[0])

    @property
    def attrs(self) -> dict:
        with h5py.File(self.path, "r") as f:
            return {k: (v.item() if hasattr(v, "item") else v) for k, v in f[K.PATCH_IMG].attrs.items()} | {
                k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()
            }

    @property
    def barcodes(self) -> np.ndarray:
        return read_patch_barcodes(self.path)

    @property
    def coords(self) -> np.ndarray:
        with h5py.File(self.path, "r") as f:
            return np.asarray(f[K.PATCH_COORDS][()]).reshape(-1, 2)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Patches ``[start:stop]`` as uint8 (n, 224, 224, 3)."""
        with h5py.File(self.path, "r") as f:
            return np.asarray(f[K.PATCH_IMG][start:stop])


@dataclass
class HestSample:
    """One sample of a HEST-layout root."""

    id: str
    root: Path
    meta: dict = field(default_factory=dict)
    _adata: object = None

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    @property
    def adata(self):
        """The sample's AnnData (raw counts in X, ``obsm['spatial']`` in level-0 pixels), loaded once."""
        if self._adata is None:
            import anndata as ad

            self._adata = ad.read_h5ad(self.layout.st(self.id))
        return self._adata

    @property
    def patches(self) -> PatchFile:
        return PatchFile(self.layout.patches(self.id))

    @property
    def pixel_size_um(self) -> float | None:
        for key in ("pixel_size_um_estimated", "pixel_size_um_embedded"):
            v = self.meta.get(key)
            if v is not None and pd.notna(v) and float(v) > 0:
                return float(v)
        return None

    @property
    def organ(self) -> str:
        v = self.meta.get("organ")
        return str(v) if v is not None and pd.notna(v) else "unknown"

    @property
    def patient(self) -> str:
        v = self.meta.get("patient")
        return str(v) if v is not None and pd.notna(v) and str(v) != "" else self.id

    def wsi(self) -> WSI:
        """Open the sample's WSI (pixel size from the slide, else from the metadata table)."""
        path = self.layout.wsi(self.id)
        w = open_wsi(path)
        if not w.has_pixel_size and self.pixel_size_um is not None:
            w._pixel_size = self.pixel_size_um
        return w

    def __repr__(self) -> str:
        return f"HestSample({self.id!r}, organ={self.organ!r}, patient={self.patient!r})"


def _check_sample(lay: Layout, sid: str, problems: list[str], require_wsi: bool) -> None:
    import anndata as ad

    st, pt = lay.st(sid), lay.patches(sid)
    missing = [str(p.relative_to(lay.root)) for p in (st, pt) if not p.is_file()]
    if require_wsi and not lay.wsi(sid).is_file():
        missing.append(str(lay.wsi(sid).relative_to(lay.root)))
    for m in missing:
        problems.append(f"{sid}: missing {m}")
    if missing:
        return
    real_root = lay.root.resolve()
    for p in (st, pt):
        if not p.resolve().is_relative_to(real_root):
            problems.append(
                f"{sid}: {p.relative_to(lay.root)} is a link to {p.resolve()}, outside the data root; "
                "copy the file into the root (links out of a root are refused)"
            )
            return
    try:
        a = ad.read_h5ad(st, backed="r")
        obs_names = np.asarray(a.obs_names).astype(str)
        spatial = np.asarray(a.obsm[K.SPATIAL]) if K.SPATIAL in a.obsm else None
        a.file.close()
    except (OSError, KeyError, ValueError, TypeError) as err:
        problems.append(
            f"{sid}: cannot read {st.name} ({type(err).__name__}: {err}); the file is corrupt or not an h5ad"
        )
        return
    if spatial is None:
        problems.append(f"{sid}: {st.name} has no obsm['spatial'] (spot centres in level-0 pixels)")
    elif spatial.ndim != 2 or spatial.shape[1] != 2 or not np.isfinite(spatial).all():
        problems.append(f"{sid}: obsm['spatial'] in {st.name} must be finite (n_spots, 2), got shape {spatial.shape}")
    if len(set(obs_names)) != len(obs_names):
        problems.append(f"{sid}: duplicate barcodes in {st.name}")
    try:
        with h5py.File(pt, "r") as f:
            for key in (K.PATCH_IMG, K.PATCH_COORDS, K.PATCH_BARCODE):
                if key not in f:
                    problems.append(f"{sid}: {pt.name} has no dataset '{key}'")
            if any(k not in f for k in (K.PATCH_IMG, K.PATCH_COORDS, K.PATCH_BARCODE)):
                return
            img, n = f[K.PATCH_IMG], f[K.PATCH_IMG].shape[0]
            if img.ndim != 4 or img.shape[3] != 3 or img.dtype != np.uint8:
                problems.append(f"{sid}: {pt.name}/img must be uint8 (N, H, W, 3), got {img.dtype} {img.shape}")
            if f[K.PATCH_COORDS].shape[0] != n or f[K.PATCH_BARCODE].shape[0] != n:
                problems.append(
                    f"{sid}: {pt.name} has {n} patches but {f[K.PATCH_COORDS].shape[0]} coords and {f[K.PATCH_BARCODE].shape[0]} barcodes"
                )
                return
            bcs = _decode(f[K.PATCH_BARCODE][()])
    except OSError as err:
        problems.append(f"{sid}: cannot read {pt.name} ({err}); the file is truncated or not HDF5")
        return
    unknown = set(bcs) - set(obs_names)
    if unknown:
        problems.append(
            f"{sid}: {len(unknown)} patch barcode(s) of {pt.name} are not spots of {st.name} (e.g. {sorted(unknown)[0]!r}); the files belong to different samples"
        )


def read_hest(root: Path | str, ids: list[str] | None = None, require_wsi: bool = False) -> list[HestSample]:
    """Open a HEST-1k-layout root.

    Parameters
    ----------
    root
        Folder with ``metadata.csv`` (or ``HEST_v1_1_0.csv``), ``st/``, ``patches/`` and optionally ``wsis/``.
    ids
        Samples to open (default: every sample in the table).
    require_wsi
        Also require ``wsis/<id>.tif``.

    Returns
    -------
    list of HestSample, in table order (or ``ids`` order). AnnData is loaded lazily.

    Raises
    ------
    LayoutError
        Naming every missing or inconsistent piece at once.
    """
    root = Path(root)
    if not root.is_dir():
        msg = f"data root {root} does not exist or is not a folder"
        raise FileNotFoundError(msg)
    lay = Layout(root)
    table = read_metadata(root)
    problems: list[str] = []
    if ids is None:
        ids = [str(i) for i in table.index]
        if lay.table_path().name == K.HEST_TABLE:
            # HEST's table lists all of HEST-1k: a partial download opens the samples that are present
            ids = [i for i in ids if lay.st(i).is_file() or lay.patches(i).is_file()]
            if not ids:
                msg = f"{root} has HEST's {K.HEST_TABLE} but no st/<id>.h5ad of any sample it lists"
                raise FileNotFoundError(msg)
    else:
        ids = [str(i) for i in ids]
        for sid in ids:
            if sid not in table.index:
                problems.append(
                    f"{sid}: not in the sample table {lay.table_path().name} (known: {', '.join(map(str, table.index[:8]))}...)"
                )
        dups = {i for i in ids if ids.count(i) > 1}
        problems.extend(f"{sid}: requested more than once" for sid in sorted(dups))
    for sid in ids:
        if sid in table.index:
            _check_sample(lay, sid, problems, require_wsi)
            jp = lay.meta_json(sid)
            if jp.is_file():
                try:
                    json.loads(jp.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    problems.append(f"{sid}: {jp.relative_to(root)} is not valid JSON ({err}); rewrite or delete it")
    if problems:
        raise LayoutError(root, problems)
    samples = []
    for sid in ids:
        meta = {k: (None if (not isinstance(v, str) and pd.isna(v)) else v) for k, v in table.loc[sid].items()}
        jp = lay.meta_json(sid)
        if jp.is_file():
            meta = json.loads(jp.read_text()) | meta
        samples.append(HestSample(id=sid, root=root, meta=meta))
    return samples
