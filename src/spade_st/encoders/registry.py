"""A small generic registry of patch encoders (timm's ``register_model`` idea, eva's ``Registry``).

Each family file registers an :class:`EncoderSpec`: its factory plus the metadata users need (embedding
dimension, input size, normalisation, how weights are found). Tests iterate over the registry, so a new
encoder is tested by being registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._validation import did_you_mean


@dataclass(frozen=True)
class EncoderSpec:
    """Metadata and factory of one encoder.

    ``factory(weights_path, **overrides) -> (nn.Module, pool)`` builds the backbone and loads the weights;
    ``pool`` maps the backbone output to (B, embed_dim).
    """

    name: str
    factory: Callable
    embed_dim: int
    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resize_to: int | None = None  #: resize before centre-cropping ``input_size`` (e.g. 256 -> 224)
    needs_weights: bool = True  #: False when weights ship with a package or are not needed
    weights_hint: str = ""
    description: str = ""
    precision: str = "bf16"  #: autocast dtype on GPU
    default_weights: Callable | None = None  #: weights shipped in a package, used when none are given


_REGISTRY: dict[str, EncoderSpec] = {}


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    """Add ``spec`` to the registry (a name may be registered once)."""
    if spec.name in _REGISTRY:
        msg = f"encoder {spec.name!r} is already registered"
        raise ValueError(msg)
    _REGISTRY[spec.name] = spec
    return spec


def _load_families() -> None:
    from . import efficientnet, resnet, simple, vits  # noqa: F401  (registration side effects)


def list_encoders() -> list[str]:
    """Names of every registered encoder."""
    _load_families()
    return sorted(_REGISTRY)


def get_spec(name: str) -> EncoderSpec:
    """The spec of ``name``; an unknown name raises with the closest registered names."""
    _load_families()
    if name not in _REGISTRY:
        msg = f"unknown encoder {name!r}{did_you_mean(name, _REGISTRY)}; registered: {', '.join(sorted(_REGISTRY))}"
        raise ValueError(msg)
    return _REGISTRY[name]


def create_encoder(name: str, weights=None, device: str | torch.device | None = None, **overrides):
    """Build encoder ``name`` with weights from ``weights`` (file or HF snapshot folder) or ``$SPADE_ST_WEIGHTS``.

    Returns an :class:`~spade_st.encoders.base.Encoder` in eval mode on ``device`` (default: CUDA if
    available, else CPU). ``overrides`` go to the architecture (tests use them to shrink models).
    """
    from .base import Encoder
    from .weights import resolve_weights

    spec = get_spec(name)
    path = resolve_weights(spec, weights)
    module, pool = spec.factory(path, **overrides)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return Encoder(spec, module, pool, weights_path=path).to(dev).eval()
