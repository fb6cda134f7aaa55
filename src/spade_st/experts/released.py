"""Importer for the released SPADE checkpoints (one BLEEP ``CLIPModel`` per expert, plus routing arrays).

Each expert file is a ``.pt`` holding ``{"model": state_dict}`` with exactly the BLEEP projection heads
``image_projection.{projection,fc,layer_norm}.{weight,bias}`` and ``spot_projection.…``. Files are read
with ``torch.load(weights_only=True)`` (no pickled code runs) and checked strictly: a missing or unexpected
key is an error, never a silently random expert. The routing needs the (K, D) centroid matrix and the (K,)
centroid -> expert vector, in the same order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .._validation import SpadeInputError, require_file
from .model import SpadeConfig, SpadeModel

_HEAD_KEYS = [f"{m}.{p}" for m in ("projection", "fc", "layer_norm") for p in ("weight", "bias")]
EXPECTED = [f"{side}.{k}" for side in ("image_projection", "spot_projection") for k in _HEAD_KEYS]


def _load_expert(path: Path) -> dict[str, torch.Tensor]:
    require_file(path, "expert checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the weights-only unpickler raises several types for foreign content
        msg = f"refusing {path}: it is not a plain tensor checkpoint ({type(err).__name__}: {err})"
        raise SpadeInputError(msg) from err
    if not isinstance(obj, dict) or "model" not in obj or not isinstance(obj["model"], dict):
        msg = f"{path} does not hold {{'model': state_dict}} as the released SPADE checkpoints do"
        raise SpadeInputError(msg)
    sd = obj["model"]
    missing, unexpected = sorted(set(EXPECTED) - set(sd)), sorted(set(sd) - set(EXPECTED))
    if missing or unexpected:
        msg = f"{path}: missing keys {missing[:4]}, unexpected keys {unexpected[:4]}; not a SPADE expert checkpoint"
        raise SpadeInputError(msg)
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        msg = f"{path}: state dict holds non-tensor values"
        raise SpadeInputError(msg)
    return sd


def _load_npy(path: Path, what: str) -> np.ndarray:
    require_file(path, f"{what} file")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        msg = f"refusing {path}: {what} must be a plain numeric .npy (no pickles): {err}"
        raise SpadeInputError(msg) from err


def import_released(
    checkpoints: list[Path | str],
    centroids: Path | str,
    centroid_expert: Path | str,
    encoder: str = "uni",
    genes: list[str] | None = None,
    tau_r: float = 0.1,
) -> SpadeModel:
    """Build a :class:`SpadeModel` from the released per-expert checkpoints (in expert order).

    ``genes``: the panel's gene names in the checkpoint's column order. The released panel is positional
    (no names are stored); without names the gene heads get placeholder names. The released experts were
    trained on raw counts, so the model's ``gene_mode`` is ``"raw"`` either way: its gene heads expect raw
    counts, never log-normalised values.
    """
    sds = [_load_expert(Path(p)) for p in checkpoints]
    C = _load_npy(Path(centroids), "centroid").astype(np.float32)
    m = _load_npy(Path(centroid_expert), "centroid->expert").astype(np.int64).ravel()
    E = len(sds)
    if C.ndim != 2 or len(m) != len(C):
        msg = f"centroids {C.shape} and centroid->expert map ({len(m)},) do not match"
        raise SpadeInputError(msg)
    if m.min() < 0 or m.max() >= E:
        msg = f"centroid->expert map refers to expert {int(m.max())}, but {E} checkpoint(s) were given"
        raise SpadeInputError(msg)
    img_in = sds[0]["image_projection.projection.weight"].shape[1]
    gene_in = sds[0]["spot_projection.projection.weight"].shape[1]
    out_dim = sds[0]["image_projection.projection.weight"].shape[0]
    if img_in != C.shape[1]:
        msg = f"expert heads take {img_in}-d features but the centroids are {C.shape[1]}-d"
        raise SpadeInputError(msg)
    for i, sd in enumerate(sds):
        for k, v in sd.items():
            if v.shape != sds[0][k].shape:
                msg = f"expert {i} ({checkpoints[i]}): {k} has shape {tuple(v.shape)}, expert 0 has {tuple(sds[0][k].shape)}"
                raise SpadeInputError(msg)
    if genes is not None and len(genes) != gene_in:
        msg = f"{len(genes)} gene names given, the gene heads take {gene_in} genes"
        raise SpadeInputError(msg)
    names = list(genes) if genes is not None else [f"released_position_{i}" for i in range(gene_in)]
    cfg = SpadeConfig(
        encoder=encoder,
        feature_dim=img_in,
        genes=names,
        n_experts=E,
        k1=int(np.bincount(m).max()),
        out_dim=out_dim,
        tau_r=tau_r,
        gene_mode="raw",
        train={"imported_from": [str(p) for p in checkpoints]},
    )
    model = SpadeModel(cfg, C, m)
    for e, sd in enumerate(sds):
        model.image_heads.load_expert_state(e, {k.split(".", 1)[1]: v for k, v in sd.items() if k.startswith("image_")})
        model.gene_heads.load_expert_state(e, {k.split(".", 1)[1]: v for k, v in sd.items() if k.startswith("spot_")})
    return model.eval()
