"""``spade-st extract``: features of every spot patch of a HEST root, one h5 per sample, resumable."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .. import __version__
from .. import _keys as K
from .._atomic import TMP_PREFIX, atomic_write_json, plain
from .._dist import barrier, default_device, init_distributed, shard
from .._progress import progress as tqdm
from ..io.features import FeatureSet, is_finished, write_features
from .registry import create_encoder


@dataclass
class ExtractConfig:
    """Options of ``spade-st extract``."""

    data: Path
    encoder: str
    out: Path
    weights: Path | None = None
    batch_size: int | None = None  #: default: 256 on GPU, 16 on CPU (measured fastest in bench_extract.py)
    device: str | None = None
    num_workers: int = 0
    ids: list[str] | None = None
    overwrite: bool = False
    progress: bool = True


class PatchChunks(Dataset):
    """Contiguous chunks of a patch h5 (one h5 read per batch, a file handle per worker process)."""

    def __init__(self, path: Path, n: int, batch_size: int):
        self.path, self.n, self.bs = Path(path), n, batch_size
        self._f = None

    def __len__(self) -> int:
        return (self.n + self.bs - 1) // self.bs

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._f is None:
            self._f = h5py.File(self.path, "r")
        return torch.from_numpy(self._f[K.PATCH_IMG][i * self.bs : (i + 1) * self.bs])

    def __getstate__(self):
        return {**self.__dict__, "_f": None}


def embed_patch_file(encoder, path: Path, n: int, cfg: ExtractConfig, bar=None) -> np.ndarray:
    """Features (n, D) float32 of all patches in ``path``."""
    cuda = encoder.device.type == "cuda"
    batch_size = cfg.batch_size or (256 if cuda else 16)
    loader = DataLoader(
        PatchChunks(path, n, batch_size),
        batch_size=None,
        num_workers=cfg.num_workers,
        pin_memory=cuda,
        persistent_workers=False,
    )
    return encode_batches(encoder, loader, n, bar)


def encode_batches(encoder, batches, n: int, bar=None) -> np.ndarray:
    """Features (n, D) float32 of the patch batches (uint8 (b, H, W, 3) arrays or tensors), in order."""
    out = np.empty((n, encoder.embed_dim), dtype=np.float32)
    done = 0
    for batch in batches:
        f = encoder(batch).cpu().numpy()
        out[done : done + len(f)] = f
        done += len(f)
        if bar is not None:
            bar.update(len(f))
    return out


def extract(cfg: ExtractConfig) -> list[Path]:
    """Extract features for the samples of ``cfg.data`` (this rank's share under torchrun).

    Writes ``cfg.out/<encoder>/<id>.h5`` atomically; a finished file whose encoder, weights hash and patch
    count match is verified and skipped. Returns the files this rank wrote or verified.
    """
    from ..io import read_hest

    info = init_distributed(cfg.device)
    samples = read_hest(cfg.data, ids=cfg.ids)
    mine = shard(samples, info)
    encoder = create_encoder(cfg.encoder, weights=cfg.weights, device=default_device(info, cfg.device))
    out_dir = Path(cfg.out) / encoder.name
    out_dir.mkdir(parents=True, exist_ok=True)
    expect = {"encoder": encoder.name, "weights_sha256": encoder.weights_sha256}
    todo, paths = [], []
    for s in mine:
        path = out_dir / f"{s.id}.h5"
        paths.append(path)
        n = len(s.patches)
        if not cfg.overwrite and is_finished(path, expect, n=n, dim=encoder.embed_dim):
            continue
        todo.append((s, path, n))
    total = sum(n for _, _, n in todo)
    bar = tqdm(
        total=total,
        unit="patch",
        desc=f"extract {cfg.encoder}" + (f" [rank {info.rank}]" if info.world_size > 1 else ""),
        disable=not cfg.progress or total == 0,
    )
    t0 = time.perf_counter()
    for s, path, n in todo:
        for stale in out_dir.glob(f"{TMP_PREFIX}{path.name}.*"):  # left by a killed run of this sample
            stale.unlink(missing_ok=True)
        pf = s.patches
        feats = embed_patch_file(encoder, pf.path, n, cfg, bar)
        attrs = pf.attrs
        write_features(
            path,
            FeatureSet(
                features=feats,
                coords=pf.coords,
                barcode=pf.barcodes,
                attrs=expect
                | {
                    "sample_id": s.id,
                    "embed_dim": encoder.embed_dim,
                    "n_patches": n,
                    "patch_size": int(attrs.get("patch_size", K.PATCH_SIZE)),
                    "pixel_size_um": float(attrs.get("pixel_size_um", K.PATCH_PIXEL_SIZE_UM)),
                    "level0_magnification": float(attrs.get("level0_magnification", np.nan)),
                    "transforms": json.dumps(encoder.transforms),
                    "precision": encoder.precision,
                    "spade_st_version": __version__,
                    "rank": info.rank,
                    "world_size": info.world_size,
                },
            ),
        )
        bar.set_postfix(patches_per_s=f"{bar.n / max(time.perf_counter() - t0, 1e-9):.0f}")
    bar.close()
    if info.is_main:
        atomic_write_json(
            out_dir / "extract_config.json",
            plain(cfg) | {"weights_sha256": encoder.weights_sha256, "spade_st_version": __version__},
        )
    barrier(info)
    return paths
