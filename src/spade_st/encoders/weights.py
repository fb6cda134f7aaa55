"""Finding and loading local encoder weights. Nothing is ever downloaded."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from .._validation import SpadeInputError, require_file

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
ENV = "SPADE_ST_WEIGHTS"


def _pick_in_folder(folder: Path) -> Path | None:
    """A weights file inside a folder (a Hugging Face snapshot or a plain folder)."""
    for name in ("model.safetensors", "pytorch_model.bin", "model.bin", "model.pth", "weights.safetensors"):
        if (folder / name).is_file():
            return folder / name
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    return files[0] if len(files) == 1 else None


def resolve_weights(spec, weights) -> Path | None:
    """The weights file of ``spec``: ``weights`` (file or folder), else ``$SPADE_ST_WEIGHTS/<name>/``.

    Returns None for encoders that need no file. A missing file is an error that says where to put it.
    """
    if weights is not None:
        p = Path(weights).expanduser()
        if p.is_dir():
            found = _pick_in_folder(p)
            if found is None:
                msg = (
                    f"no weights file in {p} for encoder {spec.name!r}: expected model.safetensors or pytorch_model.bin"
                )
                raise FileNotFoundError(msg)
            return found
        return require_file(p, f"weights for encoder {spec.name!r}")
    if not spec.needs_weights:
        return spec.default_weights() if spec.default_weights is not None else None
    env = os.environ.get(ENV)
    if env:
        folder = Path(env).expanduser() / spec.name
        if folder.is_dir():
            found = _pick_in_folder(folder)
            if found is not None:
                return found
    where = f"${ENV}/{spec.name}/" + ("" if env else f" (${ENV} is not set)")
    msg = (
        f"encoder {spec.name!r} needs local weights and none were found: pass --weights PATH "
        f"(a .safetensors/.bin file or a Hugging Face snapshot folder) or put model.safetensors in {where}. "
        f"{spec.weights_hint} spade-st never downloads weights."
    )
    raise FileNotFoundError(msg)


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict without running pickled code (safetensors, or torch.load(weights_only=True))."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch/safetensors raise many types for corrupt or unsafe files
        msg = f"cannot load weights {path}: {type(err).__name__}: {err}. Is the file complete and a plain state dict?"
        raise SpadeInputError(msg) from err
    for key in ("state_dict", "model", "teacher"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        msg = f"{path} does not hold a state dict of tensors"
        raise SpadeInputError(msg)
    for prefix in ("module.", "model.", "backbone."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def load_into(module: torch.nn.Module, sd: dict, path: Path, ignore: tuple[str, ...] = ()) -> None:
    """Strict load: a missing or unexpected key is an error (never a silently random layer)."""
    sd = {k: v for k, v in sd.items() if not k.startswith(ignore)} if ignore else sd
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if bad:
            parts.append(
                f"{len(bad)} with the wrong shape (e.g. {bad[0]}: {tuple(sd[bad[0]].shape)} vs {tuple(own[bad[0]].shape)})"
            )
        msg = f"weights {path} do not fit this architecture: {'; '.join(parts)}. Is it the right file for this encoder?"
        raise SpadeInputError(msg)
    module.load_state_dict(sd, strict=True)


def sha256_file(path: Path | None, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file ("" for None)."""
    if path is None:
        return ""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
