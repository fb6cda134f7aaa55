"""Reading a HEST-Benchmark ``bench_data`` folder as HEST ships it (the ``MahmoodLab/hest-bench`` dataset).

One folder per task (``IDC``, ``PRAD``, ...), each with ``adata/<id>.h5ad`` (spots x genes, the stored counts),
``patches/<id>.h5`` (``img`` (N, 224, 224, 3) uint8, ``barcode`` (N, 1) bytes, ``coords`` (N, 2), whose meaning
differs between HEST's two patch writers: kept opaque), ``splits/train_<i>.csv`` / ``test_<i>.csv`` (columns
``sample_id, patches_path, expr_path``, paths relative to the task folder) and gene lists such as
``var_50genes.json`` (``{"genes": [...]}``). Everything a benchmark run needs is checked by :func:`read_bench_data`
and :func:`check_task_samples` before any work, each problem as one line with the fix.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .. import _keys as K
from .._validation import DataWarning, SpadeInputError
from .barcodes import match_barcodes
from .hest import read_patch_barcodes

SPLIT_COLUMNS = ("sample_id", "patches_path", "expr_path")  #: the columns of HEST's split CSVs
DEFAULT_GENE_LIST = "var_50genes.json"  #: HEST's ``gene_list`` default
_SPLIT_RE = re.compile(r"^(train|test)_(\d+)\.csv$")
_DOWNLOAD = "download it with huggingface_hub.snapshot_download('MahmoodLab/hest-bench', repo_type='dataset')"


@dataclass
class BenchSample:
    """One sample of a task: its patch file and its AnnData (absolute paths)."""

    id: str
    patches: Path
    expr: Path


@dataclass
class BenchSplit:
    """``splits/train_<index>.csv`` and ``splits/test_<index>.csv`` of a task (sample ids in file order)."""

    index: int
    train: list[str]
    test: list[str]

    @property
    def name(self) -> str:
        """HEST's folder name of the split (``split<i>``)."""
        return f"split{self.index}"


@dataclass
class BenchTask:
    """One task folder: its splits, samples and gene list."""

    name: str
    root: Path
    gene_list: str
    genes: list[str]
    splits: list[BenchSplit]
    samples: dict[str, BenchSample] = field(default_factory=dict)

    @property
    def sample_ids(self) -> list[str]:
        """Every sample of the task's splits, in order of first appearance."""
        return list(dict.fromkeys(s for sp in self.splits for s in sp.train + sp.test))


def _is_task(p: Path) -> bool:
    return p.is_dir() and not p.name.startswith(".") and any((p / d).is_dir() for d in ("splits", "adata", "patches"))


def find_tasks(root: Path | str) -> list[str]:
    """Names of the task folders of ``root`` (folders with ``splits/``, ``adata/`` or ``patches/``; HEST's extra
    entries ``fm_v1/`` and ``.cache/`` are not tasks)."""
    root = Path(root)
    if not root.is_dir():
        msg = f"bench_data folder not found: {root}; {_DOWNLOAD}"
        raise SpadeInputError(msg)
    tasks = sorted(p.name for p in root.iterdir() if _is_task(p))
    if not tasks:
        msg = (
            f"{root} is not a HEST-Benchmark bench_data folder (no task folder with splits/, adata/, patches/); "
            f"pass the folder that holds IDC/, PRAD/, ... or {_DOWNLOAD}"
        )
        raise SpadeInputError(msg)
    return tasks


def _read_split_csv(path: Path, task: str) -> pd.DataFrame:
    df = pd.read_csv(path, dtype=str)
    missing = [c for c in SPLIT_COLUMNS if c not in df.columns]
    if missing or df.empty:
        what = f"lacks the column(s) {missing}" if missing else "has no rows"
        msg = f"task {task}: split file {path} {what}; HEST's split CSVs have the columns {', '.join(SPLIT_COLUMNS)}"
        raise SpadeInputError(msg)
    return df


def _read_splits(task_dir: Path) -> tuple[list[BenchSplit], dict[str, BenchSample]]:
    name, split_dir = task_dir.name, task_dir / "splits"
    found: dict[int, dict[str, Path]] = {}
    if split_dir.is_dir():
        for p in split_dir.iterdir():
            m = _SPLIT_RE.match(p.name)
            if m:
                found.setdefault(int(m.group(2)), {})[m.group(1)] = p
    if not found:
        msg = (
            f"task {name} has no splits (no {split_dir}/train_<i>.csv + test_<i>.csv); "
            "restore the task's splits/ folder from hest-bench or leave the task out of --tasks"
        )
        raise SpadeInputError(msg)
    n = len(found)
    broken = [i for i in range(n) if set(found.get(i, {})) != {"train", "test"}]
    if broken:
        i = broken[0]
        msg = (
            f"task {name}: splits/ must hold train_i.csv and test_i.csv for i = 0..{n - 1}, split {i} has "
            f"{sorted(found.get(i, {})) or 'neither'}; restore the missing file from hest-bench"
        )
        raise SpadeInputError(msg)
    splits, samples = [], {}
    for i in range(n):
        ids = {}
        for side in ("train", "test"):
            df = _read_split_csv(found[i][side], name)
            ids[side] = list(df["sample_id"])
            for sid, patches, expr in df[list(SPLIT_COLUMNS)].itertuples(index=False):
                s = BenchSample(sid, task_dir / patches, task_dir / expr)
                for path, what in ((s.patches, "patch file"), (s.expr, "AnnData")):
                    if not path.is_file():
                        msg = (
                            f"task {name}: {found[i][side].name} names sample {sid} whose {what} {path} is missing; "
                            "download the task folder again (adata/ and patches/) or fix the split file"
                        )
                        raise SpadeInputError(msg)
                samples.setdefault(sid, s)
        splits.append(BenchSplit(i, ids["train"], ids["test"]))
    return splits, samples


def read_genes(path: Path, task: str) -> list[str]:
    """The ``genes`` of a HEST gene-list JSON."""
    try:
        genes = json.loads(path.read_text())["genes"]
    except FileNotFoundError:
        others = sorted(p.name for p in path.parent.glob("*genes*.json"))
        msg = f"task {task}: gene list {path} not found (the folder has {others or 'none'}); pass --gene-list NAME"
        raise SpadeInputError(msg) from None
    except (json.JSONDecodeError, KeyError, TypeError):
        msg = f'task {task}: {path} is not a HEST gene list ({{"genes": [...]}}); restore it from hest-bench'
        raise SpadeInputError(msg) from None
    if not genes or len(set(genes)) != len(genes):
        msg = f"task {task}: {path} lists no genes or repeats one; restore it from hest-bench"
        raise SpadeInputError(msg)
    return [str(g) for g in genes]


def read_bench_data(
    root: Path | str, tasks: list[str] | None = None, gene_list: str = DEFAULT_GENE_LIST
) -> list[BenchTask]:
    """The tasks of a ``bench_data`` folder (``tasks``: these, in this order; default every task found)."""
    root = Path(root)
    found = find_tasks(root)
    names = list(tasks) if tasks else found
    unknown = [t for t in names if t not in found]
    if unknown:
        msg = f"task {unknown[0]} is not in {root} (found: {', '.join(found)}); pick --tasks among those"
        raise SpadeInputError(msg)
    out = []
    for name in names:
        splits, samples = _read_splits(root / name)
        genes = read_genes(root / name / gene_list, name)
        out.append(BenchTask(name, root / name, gene_list, genes, splits, samples))
    return out


def read_patch_index(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(barcodes (N,) str, coords (N, 2)) of a patch h5, without its images."""
    barcodes = read_patch_barcodes(path)
    with h5py.File(path, "r") as f:
        coords = np.asarray(f[K.PATCH_COORDS][()]).reshape(-1, 2) if K.PATCH_COORDS in f else np.zeros((0, 2))
    return barcodes, coords


def _open_adata(path: Path):
    import anndata as ad

    try:
        return ad.read_h5ad(path, backed="r")
    except (OSError, KeyError) as err:
        msg = f"cannot read AnnData {path} ({err}); it is truncated or not .h5ad: download it again"
        raise SpadeInputError(msg) from err


def check_task_samples(task: BenchTask, barcodes: dict[str, np.ndarray]) -> None:
    """Refuse, before any work, a sample whose AnnData lacks a gene of the task's list or a spot of ``barcodes``
    (sample id -> the rows that will be scored: the patch file's or the feature file's)."""
    for sid in task.sample_ids:
        s = task.samples[sid]
        a = _open_adata(s.expr)
        try:
            var = pd.Index(a.var_names.astype(str))
            missing = [g for g in task.genes if g not in var]
            if missing:
                msg = (
                    f"task {task.name}: AnnData {s.expr} lacks {len(missing)} gene(s) of {task.gene_list} "
                    f"(e.g. {missing[0]}); pass another --gene-list or restore the file"
                )
                raise SpadeInputError(msg)
            match_barcodes(barcodes[sid], a.obs_names, f"task {task.name} sample {sid}", among=f"spots of {s.expr}")
        finally:
            a.file.close()


def load_targets(task: BenchTask, sid: str, barcodes) -> np.ndarray:
    """HEST's targets of one sample: the AnnData's rows for ``barcodes`` (in that order) and the task's genes
    (in list order), as float64 log1p of the stored values (no library-size normalisation, as HEST does)."""
    import anndata as ad
    import scipy.sparse as sp

    s = task.samples[sid]
    a = ad.read_h5ad(s.expr)
    rows = match_barcodes(barcodes, a.obs_names, f"task {task.name} sample {sid}", among=f"spots of {s.expr}")
    cols = pd.Index(a.var_names.astype(str)).get_indexer(task.genes)
    x = a.X[rows][:, cols]
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    x = x.astype(np.float64)
    if not np.array_equal(x, np.round(x)):
        warnings.warn(
            f"{s.expr}: X is not integer counts; HEST's target is log1p of whatever X holds, so that is used here",
            DataWarning,
            stacklevel=2,
        )
    return np.log1p(x)
