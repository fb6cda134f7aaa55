"""Epoch checkpoints: one safetensors file (model, optimiser, best-so-far per expert, bookkeeping), atomic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from .._atomic import atomic_save_safetensors
from .._validation import SpadeInputError

LAST = "last.safetensors"
STATE_KEYS = ("best_val", "best_epoch", "since_best", "stopped", "best_total")


def config_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_checkpoint(folder: Path, model, opt, state: dict, cfg_hash: str) -> None:
    """Write ``folder/last.safetensors`` atomically (a kill mid-write leaves the previous one intact)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors |= opt.state_tensors()
    tensors |= {f"best.{k}": v.contiguous() for k, v in state["best_params"].items()}
    for k in STATE_KEYS:
        tensors[f"state.{k}"] = torch.as_tensor(np.asarray(state[k]))
    meta = {"epoch": str(state["epoch"]), "config_hash": cfg_hash, "history": json.dumps(state["history"])}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(folder / LAST, tensors, meta, fault_point=f"checkpoint{state['epoch']}")


def read_checkpoint(path: Path, cfg_hash: str, restart: str, settings: str) -> tuple[dict, dict] | None:
    """(metadata, tensors) of the checkpoint ``path``, None if there is none; an unreadable one, or one written
    with another config hash, is a one-line error (``restart``: what deleting it restarts; ``settings``: which
    settings differ)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        sd = load_file(str(path))
    except (SafetensorError, OSError) as err:
        msg = f"cannot read checkpoint {path} ({err}); delete it to restart {restart}"
        raise SpadeInputError(msg) from err
    if meta.get("config_hash") != cfg_hash:
        msg = f"checkpoint {path} was written with {settings}; use a new --out, or delete {path.parent} to restart"
        raise SpadeInputError(msg)
    return meta, sd


def load_checkpoint(folder: Path, model, opt, cfg_hash: str) -> dict | None:
    """Restore from ``folder/last.safetensors``; None if there is none. A different config is refused."""
    found = read_checkpoint(folder / LAST, cfg_hash, "training from scratch", "different training settings")
    if found is None:
        return None
    meta, sd = found
    model.load_state_dict({k[6:]: v for k, v in sd.items() if k.startswith("model.")}, strict=True)
    opt.load_state_tensors(sd)
    return {
        "epoch": int(meta["epoch"]),
        "history": json.loads(meta["history"]),
        "best_params": {k[5:]: v for k, v in sd.items() if k.startswith("best.")},
    } | {k: sd[f"state.{k}"].numpy().copy() for k in STATE_KEYS}
