"""``finetuned:DIR``: an encoder folder written by ``spade-st finetune``, used like any registered encoder.

The folder holds ``model.safetensors`` (the whole backbone of the base encoder, with the trained blocks or the
merged LoRA update in it) and ``config.json`` (base encoder, its weights' sha256, architecture overrides, what
was trained, the fine-tuning config, seed, whether the expression was permuted). Its spec is the base
encoder's (transforms, output rule) with the folder's name, output size and weights.
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path

PREFIX = "finetuned:"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
KIND = "spade-st finetuned encoder"  #: config.json["kind"] of a folder this module reads


def is_finetuned(name: str) -> bool:
    """True for an encoder name of the form ``finetuned:DIR``."""
    return isinstance(name, str) and name.startswith(PREFIX)


def folder_of(name: str) -> Path:
    """The folder of ``finetuned:DIR``."""
    return Path(name[len(PREFIX) :]).expanduser()


def read_config(folder: Path | str) -> dict:
    """``config.json`` of a fine-tuned encoder folder; a folder that is not one is a one-line error."""
    from .._validation import SpadeInputError

    folder = Path(folder)
    path = folder / CONFIG
    if not path.is_file() or not (folder / WEIGHTS).is_file():
        msg = f"{folder} is not a fine-tuned encoder folder (needs {CONFIG} and {WEIGHTS}); run `spade-st finetune --out {folder}`"
        raise FileNotFoundError(msg)
    cfg = json.loads(path.read_text())
    if cfg.get("kind") != KIND:
        msg = f"{path} is not a fine-tuned encoder's config (kind {cfg.get('kind')!r}); point finetuned: at a finetune --out"
        raise SpadeInputError(msg)
    return cfg


def _weights(folder: Path) -> Path:
    return folder / WEIGHTS


def finetuned_spec(name: str):
    """The :class:`~spade_st.encoders.registry.EncoderSpec` of ``finetuned:DIR``."""
    from .registry import get_spec

    folder = folder_of(name)
    cfg = read_config(folder)
    base = get_spec(cfg["base_encoder"])
    return dataclasses.replace(
        base,
        name=cfg["name"],
        build=partial(base.build, **cfg.get("arch", {})),
        embed_dim=int(cfg["embed_dim"]),
        needs_weights=False,
        default_weights=partial(_weights, folder.resolve()),
        adapt_weights=None,
        ignore=(),
        weights_hint="",
        description=f"{cfg['base_encoder']} fine-tuned against spot expression ({cfg['method']}) in {folder}",
    )
