"""A small LoRA layer (Hu et al. 2021) for the linear projections of ViT encoders, and its merge.

``y = W x + b + (alpha / r) * B A x``: ``W``, ``b`` frozen; ``A`` (r, in) Kaiming-uniform from a seeded
generator, ``B`` (out, r) zeros, so an untrained adapter leaves the encoder exactly as it was. After training,
:func:`merge_lora` folds ``(alpha / r) B A`` into ``W`` and puts the plain ``nn.Linear`` back: the fine-tuned
encoder is the base architecture with new weights and loads like any registered encoder.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: names of the linear layers adapted by default: attention qkv and output, MLP in and out (timm's ViT names)
DEFAULT_TARGETS = ("qkv", "proj", "fc1", "fc2")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-``r`` update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator | None = None):
        super().__init__()
        if rank < 1:
            msg = f"LoRA rank must be >= 1, got {rank}"
            raise ValueError(msg)
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank, self.scale = rank, alpha / rank
        dev, dt = base.weight.device, base.weight.dtype
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=dev, dtype=dt))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=dev, dtype=dt))
        bound = 1.0 / math.sqrt(base.in_features)  # nn.Linear's Kaiming-uniform(a=sqrt(5)) bound
        with torch.no_grad():
            self.lora_a.uniform_(-bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale

    def merged(self) -> nn.Linear:
        """The plain linear layer with the update folded into its weight."""
        with torch.no_grad():
            self.base.weight.add_(self.scale * (self.lora_b @ self.lora_a))
        return self.base


def _parent(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    *path, leaf = name.split(".")
    mod = root
    for p in path:
        mod = getattr(mod, p)
    return mod, leaf


def apply_lora(
    model: nn.Module, rank: int = 8, alpha: float = 16.0, targets=DEFAULT_TARGETS, seed: int = 0
) -> list[str]:
    """Replace every ``nn.Linear`` inside ``model.blocks`` whose own name is in ``targets`` by a :class:`LoRALinear`.

    Every other parameter is frozen. Returns the adapted layers' names (in module order); none found is an
    error that names what was looked for.
    """
    if not hasattr(model, "blocks"):
        msg = f"LoRA needs a ViT with .blocks (timm's layout); {type(model).__name__} has none"
        raise ValueError(msg)
    names = [
        f"blocks.{n}"
        for n, m in model.blocks.named_modules()
        if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in set(targets)
    ]
    if not names:
        msg = f"no linear layer named {list(targets)} inside the model's blocks; pass lora_targets that exist"
        raise ValueError(msg)
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    for n in names:
        parent, leaf = _parent(model, n)
        setattr(parent, leaf, LoRALinear(getattr(parent, leaf), rank, alpha, generator=g))
    return names


def lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The LoRA parameters of ``model`` by name."""
    return {n: p for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] in ("lora_a", "lora_b")}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every :class:`LoRALinear` of ``model`` into its base layer (in place); returns ``model``."""
    found = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for n in found:
        parent, leaf = _parent(model, n)
        setattr(parent, leaf, getattr(parent, leaf).merged())
    return model
