"""Pathology ViTs through timm, with LOCAL weights only and each model's published arguments.

Architecture arguments, normalisation and output rule follow each model's card:

- ``uni``: ViT-L/16 (UNI, as SPADE used it), class token, 1024-d;
- ``uni2-h``: ViT-H/14-style giant with SwiGLU, 8 register tokens, class token, 1536-d;
- ``virchow2``: ViT-H/14 with SwiGLU and 4 register tokens; class token concatenated with the mean of the
  patch tokens (registers excluded), 2560-d;
- ``h-optimus-0`` / ``h-optimus-1``: ViT-g/14 with 4 registers (DINOv2), class token, 1536-d, own mean/std;
- ``gigapath``: Prov-GigaPath tile encoder, ViT-g/16 (DINOv2 layout), resize 256 + centre crop 224, 1536-d.
"""

from __future__ import annotations

from functools import partial

import torch

from .registry import EncoderSpec, register_encoder

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HOPTIMUS = ((0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517))


def _swiglu_kwargs() -> dict:
    from timm.layers import SwiGLUPacked

    return {"mlp_layer": SwiGLUPacked, "act_layer": torch.nn.SiLU}


ARCHS: dict[str, tuple[str, dict]] = {
    "uni": (
        "vit_large_patch16_224",
        {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": True},
    ),
    "uni2-h": (
        "vit_giant_patch14_224",
        {
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "num_classes": 0,
            "no_embed_class": True,
            "reg_tokens": 8,
            "dynamic_img_size": True,
            "swiglu": True,
        },
    ),
    "virchow2": (
        "vit_huge_patch14_224",
        {
            "img_size": 224,
            "init_values": 1e-5,
            "num_classes": 0,
            "mlp_ratio": 5.3375,
            "reg_tokens": 4,
            "global_pool": "",
            "dynamic_img_size": True,
            "swiglu": True,
        },
    ),
    "h-optimus-0": (
        "vit_giant_patch14_reg4_dinov2",
        {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": False},
    ),
    "h-optimus-1": (
        "vit_giant_patch14_reg4_dinov2",
        {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": False},
    ),
    "gigapath": (
        "vit_giant_patch14_dinov2",
        {
            "img_size": 224,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "init_values": 1e-5,
            "mlp_ratio": 5.33334,
            "num_classes": 0,
        },
    ),
}


def build_vit(name: str, **overrides) -> torch.nn.Module:
    """The timm ViT of ``name`` with its published arguments (``overrides`` replace some, e.g. depth)."""
    from .._optional import require

    timm = require("timm", "timm", "encoders")

    arch, kwargs = ARCHS[name]
    kwargs = dict(kwargs)
    if kwargs.pop("swiglu", False):
        kwargs |= _swiglu_kwargs()
    kwargs |= overrides
    return timm.create_model(arch, pretrained=False, **kwargs)


def _cls_and_mean_patch(model, tokens: torch.Tensor) -> torch.Tensor:
    """Virchow's output rule: [class token, mean of patch tokens] (register tokens excluded)."""
    return torch.cat([tokens[:, 0], tokens[:, model.num_prefix_tokens :].mean(1)], dim=-1)


_HINT = "Weights come from the model's gated Hugging Face repository, downloaded once by you, under its licence."
for _name, _dim, (_mean, _std), _resize, _desc in [
    ("uni", 1024, IMAGENET, None, "UNI (MahmoodLab) ViT-L/16, class token"),
    ("uni2-h", 1536, IMAGENET, None, "UNI2-h (MahmoodLab) ViT-H/14 SwiGLU, 8 registers, class token"),
    ("virchow2", 2560, IMAGENET, None, "Virchow2 (Paige) ViT-H/14, class token + mean patch token"),
    ("h-optimus-0", 1536, HOPTIMUS, None, "H-optimus-0 (Bioptimus) ViT-g/14, 4 registers, class token"),
    ("h-optimus-1", 1536, HOPTIMUS, None, "H-optimus-1 (Bioptimus) ViT-g/14, 4 registers, class token"),
    ("gigapath", 1536, IMAGENET, 256, "Prov-GigaPath tile encoder ViT-g/16, resize 256 + crop 224"),
]:
    register_encoder(
        EncoderSpec(
            name=_name,
            build=partial(build_vit, _name),
            pool=_cls_and_mean_patch if _name == "virchow2" else None,
            embed_dim=_dim,
            mean=_mean,
            std=_std,
            resize_to=_resize,
            weights_hint=_HINT,
            description=_desc,
        )
    )
