"""Encoders as an ordered list of blocks, so the last N can be trained while the prefix runs once.

``units(name, backbone)`` returns the backbone's blocks in forward order and the tail that turns the last
block's output into the backbone's output, such that ``tail(u_n(...u_1(x)))`` equals ``backbone(x)``
(tested to 1e-5 against the whole network). A CNN family is supported by adding its function to
:data:`UNIT_RULES`; families without one (the ViTs) are fine-tuned whole, with LoRA (:mod:`.lora`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _efficientnet(b) -> tuple[list[tuple[str, nn.Module]], Callable]:
    """timm EfficientNet: stem, every inverted-residual block (stages flattened), head conv; global pool."""
    out: list[tuple[str, nn.Module]] = [("stem", nn.Sequential(b.conv_stem, b.bn1))]
    for s, stage in enumerate(b.blocks):
        out += [(f"blocks.{s}.{j}", blk) for j, blk in enumerate(stage)]
    out.append(("head", nn.Sequential(b.conv_head, b.bn2)))
    return out, b.forward_head


def _resnet_trunc(b) -> tuple[list[tuple[str, nn.Module]], Callable]:
    """ResNet-50 truncated after layer 3: stem, every bottleneck of layers 1-3; average pool."""
    out: list[tuple[str, nn.Module]] = [("stem", nn.Sequential(b.conv1, b.bn1, b.relu, b.maxpool))]
    for layer in ("layer1", "layer2", "layer3"):
        out += [(f"{layer}.{j}", blk) for j, blk in enumerate(getattr(b, layer))]
    return out, lambda x: torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


def _random_cnn(b) -> tuple[list[tuple[str, nn.Module]], Callable]:
    """The test CNN: each (conv, batch norm, ReLU) triple; spatial mean."""
    layers = list(b.body)
    out = [(f"body.{i}", nn.Sequential(*layers[i : i + 3])) for i in range(0, len(layers), 3)]
    return out, lambda x: x.mean((2, 3))


#: encoder name -> rule giving (blocks in forward order, tail)
UNIT_RULES: dict[str, Callable] = {
    "efficientnet_lite0": _efficientnet,
    "resnet50_trunc": _resnet_trunc,
    "random_cnn": _random_cnn,
}


def has_units(name: str) -> bool:
    """True when encoder ``name`` can be split into blocks (last-N-block fine-tuning with a cached prefix)."""
    return name in UNIT_RULES


def units(name: str, backbone: nn.Module) -> tuple[list[tuple[str, nn.Module]], Callable]:
    """(blocks of ``backbone`` as (name, module) in forward order, tail) for encoder ``name``."""
    if name not in UNIT_RULES:
        msg = f"encoder {name!r} has no block rule; use method 'lora' (ViTs) or one of {sorted(UNIT_RULES)}"
        raise ValueError(msg)
    return UNIT_RULES[name](backbone)


class SplitNet(nn.Module):
    """A backbone cut before its last ``n_train`` blocks: :meth:`prefix` (frozen) and :meth:`suffix` (trained).

    ``suffix(prefix(x))`` equals ``pool(backbone(x))`` for the encoder's output rule ``pool``. The modules are
    the backbone's own (shared, not copied), so training the suffix trains the backbone's parameters.
    """

    def __init__(self, name: str, backbone: nn.Module, n_train: int, pool: Callable | None = None):
        super().__init__()
        blocks, tail = units(name, backbone)
        if not 1 <= n_train <= len(blocks):
            msg = f"train_blocks must be in 1..{len(blocks)} for {name!r} (its blocks: {len(blocks)}), got {n_train}"
            raise ValueError(msg)
        self.backbone = backbone
        self.cut = len(blocks) - n_train
        self.block_names = [n for n, _ in blocks]
        self._blocks = [m for _, m in blocks]
        self._tail = tail
        self._pool = pool

    @property
    def trained_names(self) -> list[str]:
        """Names of the trained blocks."""
        return self.block_names[self.cut :]

    def trained_parameters(self) -> dict[str, nn.Parameter]:
        """The backbone's parameters that belong to the trained blocks, by their backbone names."""
        ids = {id(p) for m in self._blocks[self.cut :] for p in m.parameters()}
        return {k: p for k, p in self.backbone.named_parameters() if id(p) in ids}

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        for m in self._blocks[: self.cut]:
            x = m(x)
        return x

    def suffix(self, h: torch.Tensor) -> torch.Tensor:
        for m in self._blocks[self.cut :]:
            h = m(h)
        out = self._tail(h)
        return self._pool(out) if self._pool is not None else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.suffix(self.prefix(x))
