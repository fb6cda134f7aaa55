"""The encoder wrapper: uint8 patches in, (B, D) features out, with the encoder's own transforms."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .weights import sha256_file


class Encoder(nn.Module):
    """A frozen patch encoder.

    Call it on a uint8 batch (B, H, W, 3) (NumPy or tensor): it resizes to the encoder's input size (and
    centre-crops when the spec says so), normalises with the encoder's mean and std, runs the backbone and
    pools to (B, ``embed_dim``) float32. On CUDA it runs under autocast in ``precision`` with channels_last.
    """

    def __init__(self, spec, backbone: nn.Module, pool, weights_path: Path | None = None):
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.pool = pool
        self.weights_path = weights_path
        self.register_buffer("_mean", torch.tensor(spec.mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("_std", torch.tensor(spec.std).view(1, 3, 1, 1) * 255.0, persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    @property
    def precision(self) -> str:
        return self.spec.precision if self.device.type == "cuda" else "fp32"

    @property
    def transforms(self) -> dict:
        """Input size, resize, mean and std (on the 0-1 scale), as a dict recorded with the features."""
        return {
            "input_size": self.spec.input_size,
            "resize_to": self.spec.resize_to,
            "mean": list(self.spec.mean),
            "std": list(self.spec.std),
        }

    @property
    def device(self) -> torch.device:
        return self._mean.device

    @cached_property
    def weights_sha256(self) -> str:
        return sha256_file(self.weights_path)

    def preprocess(self, batch) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> normalised float (B, 3, S, S) on the encoder's device."""
        x = torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            msg = f"encoder input must be uint8 (B, H, W, 3), got {x.dtype} {tuple(x.shape)}"
            raise ValueError(msg)
        x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        s = self.spec.input_size
        target = self.spec.resize_to or s
        if x.shape[-2:] != (target, target):
            x = F.interpolate(x, size=(target, target), mode="bicubic", align_corners=False, antialias=True)
        if target != s:
            o = (target - s) // 2
            x = x[..., o : o + s, o : o + s]
        x = (x - self._mean) / self._std
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else x

    @torch.inference_mode()
    def forward(self, batch) -> torch.Tensor:
        x = self.preprocess(batch)
        if self.device.type == "cuda":
            dtype = torch.bfloat16 if self.spec.precision == "bf16" else torch.float16
            with torch.autocast("cuda", dtype=dtype):
                out = self.pool(self.backbone(x))
        else:
            out = self.pool(self.backbone(x))
        return out.float()
