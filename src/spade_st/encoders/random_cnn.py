"""``random_cnn``: a small, seeded, randomly initialised CNN for tests and smoke runs."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from .registry import EncoderSpec, register_encoder

RANDOM_CNN_DIM = 64


class RandomCNN(nn.Module):
    """Four strided conv blocks and a global average pool; deterministic given ``seed``."""

    def __init__(self, dim: int = RANDOM_CNN_DIM, seed: int = 0):
        super().__init__()
        widths = [3, 16, 32, 48, dim]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
                    m.bias.zero_()

    def forward(self, x):
        return self.body(x).mean((2, 3))


register_encoder(
    EncoderSpec(
        name="random_cnn",
        build=RandomCNN,
        embed_dim=RANDOM_CNN_DIM,
        needs_weights=False,
        precision="fp16",
        description="seeded random CNN (tests and smoke runs; carries no learned signal)",
    )
)
