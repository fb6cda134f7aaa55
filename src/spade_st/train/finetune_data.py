"""What ``finetune`` trains on: the split's spots with their expression, dihedral views, and the prefix cache.

Rows are every patch of the split's training and validation samples (in the root's order), matched to the
sample's spots by barcode. The permuted control shuffles expression rows among the spots of each section
(never across sections), with a seed per (seed, section). The frozen prefix of a block-trained CNN is
computed once per patch and per dihedral view and kept in one memory-mapped ``.npy`` per sample, in a folder
named by a hash of everything that decides it (base encoder, weights' sha256, architecture, cut, views), so
folds and seeds that share a prefix share the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch

from .. import _keys as K
from .._atomic import TMP_PREFIX
from .._progress import progress as tqdm
from .._validation import SpadeInputError

#: the dihedral views used for ``views`` = 1, 2, 4, 8 (index v: ``v % 4`` quarter turns, mirrored when v >= 4)
VIEW_SETS = {1: (0,), 2: (0, 4), 4: (0, 1, 2, 3), 8: tuple(range(8))}


def dihedral(batch: np.ndarray, v: int) -> np.ndarray:
    """View ``v`` (0-7) of uint8 patches (B, H, W, 3): mirrored left-right when v >= 4, then ``v % 4`` quarter turns."""
    x = batch[:, :, ::-1] if v >= 4 else batch
    return np.ascontiguousarray(np.rot90(x, k=v % 4, axes=(1, 2)))


def permutation_within(sections: np.ndarray, seed: int) -> np.ndarray:
    """Row order that permutes rows among the rows of the same section (``sections``: one label per row).

    Each section is shuffled by its own generator, seeded by (``seed``, crc32 of its label), so the result
    does not depend on which other sections are present.
    """
    sections = np.asarray(sections).astype(str)
    order = np.arange(len(sections))
    for sid in pd.unique(sections):
        rows = np.flatnonzero(sections == sid)
        rng = np.random.default_rng([int(seed), zlib.crc32(sid.encode())])
        order[rows] = rows[rng.permutation(len(rows))]
    return order


@dataclass
class Spots:
    """The rows fine-tuning reads: one per patch of the split's samples."""

    sample_ids: list[str]
    patch_paths: list[Path]
    offsets: np.ndarray  #: (n_samples + 1,) first row of each sample
    section: np.ndarray  #: (N,) sample index of each row
    local: np.ndarray  #: (N,) row within its sample's patch file
    expression: np.ndarray  #: (N, G) float32 gene-head input (permuted within sections for the control)
    train: np.ndarray  #: row indices that train
    val: np.ndarray  #: row indices that validate

    def __len__(self) -> int:
        return len(self.section)


def build_spots(samples, split, panel, permute: bool = False, seed: int = 0) -> Spots:
    """The :class:`Spots` of ``split``'s training and validation samples (``samples``: HestSample objects)."""
    used = set(split.train) | set(split.val)
    chosen = [s for s in samples if s.id in used]
    by_id = {s.id: s for s in samples}
    blocks = split.block_barcodes(by_id) if split.val_blocks else {}
    ids, paths, expr, val_mask, sizes = [], [], [], [], []
    for s in chosen:
        bcs = np.asarray(s.patches.barcodes).astype(str)
        a = s.adata
        pos = pd.Index(a.obs_names.astype(str)).get_indexer(pd.Index(bcs))
        if (pos < 0).any():
            msg = (
                f"{s.id}: {int((pos < 0).sum())} patch barcodes are not spots of st/{s.id}.h5ad; re-convert the sample"
            )
            raise SpadeInputError(msg)
        ids.append(s.id)
        paths.append(s.patches.path)
        expr.append(np.asarray(panel.transform(a[pos], sample_id=s.id), np.float32))
        in_val = np.ones(len(bcs), bool) if s.id in split.val else np.isin(bcs, np.asarray(blocks.get(s.id, [])))
        val_mask.append(in_val)
        sizes.append(len(bcs))
    section = np.repeat(np.arange(len(ids)), sizes)
    expression = np.concatenate(expr) if expr else np.zeros((0, len(panel)), np.float32)
    if permute:
        expression = expression[permutation_within(np.asarray(ids)[section], seed)]
    val_mask = np.concatenate(val_mask) if val_mask else np.zeros(0, bool)
    return Spots(
        sample_ids=ids,
        patch_paths=paths,
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        section=section,
        local=np.concatenate([np.arange(n) for n in sizes]) if sizes else np.zeros(0, np.int64),
        expression=expression,
        train=np.flatnonzero(~val_mask),
        val=np.flatnonzero(val_mask),
    )


class PatchReader:
    """uint8 patches of arbitrary rows of :class:`Spots` (one sorted h5 read per sample and batch)."""

    def __init__(self, spots: Spots):
        self.spots = spots
        self._files: dict[int, h5py.File] = {}

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        out = None
        for si in np.unique(self.spots.section[rows]):
            where = np.flatnonzero(self.spots.section[rows] == si)
            local = self.spots.local[rows[where]]
            order = np.argsort(local, kind="stable")
            uniq, inv = np.unique(local[order], return_inverse=True)
            f = self._files.get(int(si)) or self._files.setdefault(int(si), h5py.File(self.spots.patch_paths[si], "r"))
            got = np.asarray(f[K.PATCH_IMG][uniq])[inv]
            if out is None:
                out = np.empty((len(rows), *got.shape[1:]), np.uint8)
            out[where[order]] = got
        return out

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def cache_key(record: dict) -> str:
    """Folder name of a prefix cache: a short hash of what decides the prefix's output."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prefix_cache(
    split_net, preprocess, spots: Spots, views: int, folder: Path, batch_size: int = 16, progress: bool = True
) -> list[np.ndarray]:
    """Memory-mapped prefix outputs (n_patches, views, C, H, W) float32, one per sample of ``spots``.

    A sample whose file is there (written whole, then renamed) is reused; the others are computed under
    ``torch.inference_mode`` in batches and written atomically.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vs = VIEW_SETS[views]
    todo = [i for i, sid in enumerate(spots.sample_ids) if not (folder / f"{sid}.npy").is_file()]
    total = sum(int(spots.offsets[i + 1] - spots.offsets[i]) for i in todo) * len(vs)
    bar = tqdm(total=total, unit="patch", desc="finetune: prefix cache", disable=not progress or total == 0)
    for i in todo:
        sid, n = spots.sample_ids[i], int(spots.offsets[i + 1] - spots.offsets[i])
        arr, tmp = None, folder / f"{TMP_PREFIX}{sid}.{os.getpid()}.npy"
        with h5py.File(spots.patch_paths[i], "r") as f, torch.inference_mode():
            for start in range(0, n, batch_size):
                img = np.asarray(f[K.PATCH_IMG][start : start + batch_size])
                for j, v in enumerate(vs):
                    h = split_net.prefix(preprocess(dihedral(img, v))).float().cpu().numpy()
                    if arr is None:
                        arr = np.lib.format.open_memmap(
                            tmp, mode="w+", dtype=np.float32, shape=(n, len(vs), *h.shape[1:])
                        )
                    arr[start : start + len(img), j] = h
                    bar.update(len(img))
        arr.flush()
        del arr
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, folder / f"{sid}.npy")
    bar.close()
    out = []
    for sid, n in zip(spots.sample_ids, np.diff(spots.offsets), strict=True):
        a = np.load(folder / f"{sid}.npy", mmap_mode="r")
        if a.shape[0] != n or a.shape[1] != len(vs):
            msg = (
                f"prefix cache {folder / f'{sid}.npy'} holds {a.shape[:2]}, expected ({n}, {len(vs)}); delete {folder}"
            )
            raise SpadeInputError(msg)
        out.append(a)
    return out


def gather_cached(cache: list[np.ndarray], spots: Spots, rows: np.ndarray, view_idx: np.ndarray) -> torch.Tensor:
    """Prefix outputs of ``rows`` in views ``view_idx`` (positions in the cache's view axis), as one tensor."""
    rows = np.asarray(rows, np.int64)
    first = cache[int(spots.section[rows[0]])]
    out = np.empty((len(rows), *first.shape[2:]), np.float32)
    for si in np.unique(spots.section[rows]):
        where = np.flatnonzero(spots.section[rows] == si)
        out[where] = cache[int(si)][spots.local[rows[where]], view_idx[where]]
    return torch.from_numpy(out)
