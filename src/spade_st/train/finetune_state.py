"""The fine-tuning checkpoint: trained tensors, heads, AdamW state and the best epoch, in one atomic file.

``OUT/checkpoints/last.safetensors`` is rewritten after every epoch (temp file, fsync, rename); its metadata
holds the epoch, the history and the settings' hash, so a resume under other settings is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .._atomic import atomic_save_safetensors

LAST = Path("checkpoints") / "last.safetensors"


def _opt_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    return out


def save_state(folder: Path, params: dict, objective, opt, state: dict, key: str) -> None:
    """Write the checkpoint of the epoch just finished (``state``: epoch, history, best_* and best tensors)."""
    tensors = {f"enc.{k}": p.detach().cpu().contiguous() for k, p in params.items()}
    tensors |= {f"head.{k}": v.detach().cpu().contiguous() for k, v in objective.state_dict().items()}
    tensors |= {f"best.{k}": v.detach().cpu().contiguous() for k, v in state["best"].items()}
    tensors |= _opt_tensors(opt)
    meta = {
        "config_hash": key,
        "epoch": str(state["epoch"]),
        "history": json.dumps(state["history"]),
        "best": json.dumps({k: state[k] for k in ("best_val", "best_epoch", "since_best")}),
    }
    atomic_save_safetensors(Path(folder) / LAST, tensors, meta, fault_point=f"finetune{state['epoch']}")


def load_state(folder: Path, params: dict, objective, opt, key: str) -> dict | None:
    """Restore the checkpoint into ``params``, ``objective`` and ``opt``; None when there is none."""
    from .checkpoint import read_checkpoint

    found = read_checkpoint(Path(folder) / LAST, key, "fine-tuning", "other settings")
    if found is None:
        return None
    meta, sd = found
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(sd[f"enc.{k}"])
    objective.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("head.")})
    st = opt.state_dict()
    restored: dict[int, dict] = {}
    for k, v in sd.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            restored.setdefault(int(i), {})[name] = v
    st["state"] = restored
    opt.load_state_dict(st)
    best = json.loads(meta["best"])
    return best | {
        "epoch": int(meta["epoch"]),
        "history": json.loads(meta["history"]),
        "best": {k[5:]: v for k, v in sd.items() if k.startswith("best.")},
    }
