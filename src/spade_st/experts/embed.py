"""``spade-st embed``: SPADE embeddings for every feature file, one h5 per sample or slide."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from .. import _keys as K
from .._atomic import atomic_path, plain
from .._dist import barrier, default_device, init_distributed, shard
from .._progress import progress as tqdm
from .._validation import SpadeInputError, require_file
from ..io.features import (
    GEOMETRY_ATTRS,
    FeatureSet,
    feature_encoder,
    feature_files,
    feature_shape,
    is_finished,
    read_feature_attrs,
    read_features,
    write_features,
)
from ..io.runs import ModelLayout
from .model import SpadeModel
from .router import check_topk


@dataclass
class EmbedConfig:
    """Options of ``spade-st embed``."""

    model: Path
    features: Path
    out: Path
    ids: list[str] | None = None
    encoder: str | None = None  #: the files' encoder when neither they nor their folder name it (TRIDENT's)
    topk: int | None = None
    tau_r: float | None = None
    batch_size: int = 8192
    device: str | None = None  #: None: CUDA if available, else CPU (the rule of every command)
    data: Path | None = None  #: HEST root whose AnnData are copied to OUT/<id>.h5ad with obsm["X_spade"] (adata=True)
    adata: bool = False
    overwrite: bool = False
    progress: bool = True


def embed_features(cfg: EmbedConfig) -> list[Path]:
    """Embed ``cfg.features/*.h5`` with the model; writes ``cfg.out/<id>.h5`` (embeddings, expert_weights, barcode).

    Under torchrun the files are shared round-robin over the ranks (each written by one); every rank checks every
    file first, and rank 0 writes ``embed_config.json`` once all are done. Returns every output path.
    """
    info = init_distributed(cfg.device)
    model = SpadeModel.from_pretrained(cfg.model, device=default_device(info, cfg.device))
    check_topk(cfg.topk, model.config.n_experts)
    files = feature_files(cfg.features, "feature files", "run `spade-st extract` (or extract-wsi) first")
    if cfg.ids is not None:
        if not Path(cfg.features).is_dir():
            msg = f"--ids picks files of a folder; --features {cfg.features} is one file: drop --ids or pass its folder"
            raise SpadeInputError(msg)
        files = [Path(cfg.features) / f"{i}.h5" for i in cfg.ids]
    encoders = {f: check_feature_file(f, model, cfg.encoder) for f in files}  # every file, before any work
    if cfg.adata and cfg.data is None:
        msg = "--adata needs --data ROOT (the HEST root whose samples' AnnData are copied with obsm['X_spade'])"
        raise SpadeInputError(msg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    from .._atomic import atomic_write_json
    from ..encoders.weights import sha256_file

    model_sha = sha256_file(ModelLayout(cfg.model).weights)
    expect = {
        "model_sha256": model_sha,
        "topk": cfg.topk if cfg.topk else 0,
        "tau_r": float(cfg.tau_r if cfg.tau_r is not None else model.config.tau_r),
    }
    written = [out / f.name for f in files]
    for f in tqdm(shard(files, info), desc="embed", unit="file", disable=not cfg.progress or info.rank != 0):
        dst = out / f.name
        fs = read_features(f, require_complete=False)
        if not cfg.overwrite and is_finished(dst, expect, n=len(fs), dim=model.config.out_dim):
            emb = None
        else:
            check_finite(fs, f)  # before this file's output; earlier files stay written
            enc = encoders[f]
            emb, w = model.embed(
                fs.features,
                batch_size=cfg.batch_size,
                tau_r=cfg.tau_r,
                topk=cfg.topk,
                encoder=str(enc) if enc else None,
                return_weights=True,
            )
            write_features(
                dst,
                FeatureSet(
                    features=emb,
                    coords=fs.coords,
                    barcode=fs.barcode,
                    attrs=expect
                    | {
                        "encoder": str(enc or model.config.encoder),
                        "embed_dim": model.config.out_dim,
                        "n_experts": model.config.n_experts,
                        "spade_st_version": __version__,
                        "rank": info.rank,
                        "world_size": info.world_size,
                        "source_features": str(f),
                    }
                    | {k: fs.attrs[k] for k in GEOMETRY_ATTRS if k in fs.attrs},
                ),
                encoder_name=f"spade-{enc or model.config.encoder}",  # what a TRIDENT loader sees
                extra={"expert_weights": w} | {k: v for k, v in fs.arrays.items() if k == "tissue_fraction"},
            )
        if cfg.adata:
            _put_in_adata(Path(cfg.data), f.stem, dst, model, out / f"{f.stem}.h5ad")
    barrier(info)
    if info.rank == 0:
        atomic_write_json(out / "embed_config.json", plain(cfg) | expect)
    return written


def check_feature_file(f: Path, model, encoder: str | None) -> str | None:
    """A feature file against the model (attributes and shape only): its encoder (as it, the flag or its TRIDENT
    folder says) and width. Returns the encoder it names (None: nothing does, taken as the model's)."""
    attrs = read_feature_attrs(f)
    enc = feature_encoder(f, attrs, encoder)
    if enc is not None and enc != model.config.encoder:
        where = "" if attrs.get("encoder") or encoder else f" (by its folder name {f.parent.name}/)"
        msg = (
            f"{f} holds {enc} features{where}; the model takes {model.config.encoder}: embed "
            f"{model.config.encoder} features, or pass --encoder {model.config.encoder} if that is what they are"
        )
        raise SpadeInputError(msg)
    width = feature_shape(f)[1]
    if width != model.config.feature_dim:
        msg = f"{f} has {width}-d features; the model takes {model.config.feature_dim}-d {model.config.encoder}"
        raise SpadeInputError(msg)
    return enc


def check_finite(fs: FeatureSet, path: Path) -> None:
    """Refuse NaN/Inf feature rows (they would flow into every embedding and prediction)."""
    bad = ~np.isfinite(fs.features).all(1)
    if bad.any():
        msg = f"{path}: {int(bad.sum())} of {len(fs)} feature rows hold NaN or Inf; re-extract the file"
        raise SpadeInputError(msg)


def _put_in_adata(root: Path, sid: str, emb_path: Path, model, dst: Path) -> None:
    """Write ``dst``: the sample's AnnData with ``obsm['X_spade']`` (rows aligned by barcode), atomically.

    The data root is never written to: its ``st/<sid>.h5ad`` holds the raw data."""
    import anndata as ad

    from ..io.layout import Layout

    st = Layout(root).st(sid)
    require_file(st, "--adata: the sample's st.h5ad", "is --data the root the features were extracted from?")
    fs = read_features(emb_path)
    a = ad.read_h5ad(st)
    pos = a.obs_names.get_indexer(fs.barcode.astype(str)) if fs.barcode is not None else np.arange(a.n_obs)
    if (pos < 0).any() or len(fs) != a.n_obs:
        msg = f"--adata: embeddings of {sid} do not match the spots of {st} ({len(fs)} rows vs {a.n_obs} spots)"
        raise SpadeInputError(msg)
    X = np.zeros((a.n_obs, fs.features.shape[1]), np.float32)
    X[pos] = fs.features
    a.obsm[K.SPADE] = X
    a.uns[K.UNS] = {
        "params": {
            "encoder": model.config.encoder,
            "n_experts": model.config.n_experts,
            "tau_r": fs.attrs.get("tau_r"),
            "model_sha256": fs.attrs.get("model_sha256"),
        }
    }
    with atomic_path(dst) as tmp:
        a.write_h5ad(tmp)
