"""CLAM-style truncated ResNet-50 (ImageNet, up to layer 3, average-pooled, 1024-d) from a local file."""

from __future__ import annotations

import torch
from torch import nn

from .registry import EncoderSpec, register_encoder


class ResNet50Trunc(nn.Module):
    """torchvision ResNet-50 stem + layers 1-3 (the parameter names match torchvision's)."""

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet50

        full = resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = full.conv1, full.bn1, full.relu, full.maxpool
        self.layer1, self.layer2, self.layer3 = full.layer1, full.layer2, full.layer3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


register_encoder(
    EncoderSpec(
        name="resnet50_trunc",
        build=ResNet50Trunc,
        ignore=("layer4.", "fc."),  # a full torchvision file, as users have it
        embed_dim=1024,
        weights_hint="Use torchvision's ImageNet ResNet-50 file (resnet50-*.pth, IMAGENET1K_V1 as CLAM did).",
        description="ResNet-50 truncated after layer 3 (CLAM), ImageNet, 1024-d",
    )
)
