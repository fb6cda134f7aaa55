"""A small generic registry of patch encoders (timm's ``register_model`` idea, eva's ``Registry``).

Each family file registers an :class:`EncoderSpec`: how to build the backbone with random weights, how its
published weight files map onto it, its output rule, and the metadata users need (embedding dimension, input
size, normalisation, how weights are found). Building and loading weights are two steps
(:func:`build_backbone`, :func:`load_weights`), as in timm, so the tests build every registered encoder at
random, save it, and load it back: a new encoder is tested by being registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._validation import did_you_mean


@dataclass(frozen=True)
class EncoderSpec:
    """Metadata, builder and weight mapping of one encoder.

    ``build(**overrides) -> nn.Module`` makes the backbone with random weights (``overrides`` go to the
    architecture; tests use them to shrink models). ``pool(backbone, output) -> (B, embed_dim)`` is the output
    rule (None: the backbone's output as is). ``adapt_weights(backbone, state_dict) -> state_dict`` renames a
    published file's keys to the backbone's (None: as is); keys starting with ``ignore`` (a classifier the
    features do not use) are dropped; every other key must fit exactly.
    """

    name: str
    build: Callable[..., torch.nn.Module]
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
    pool: Callable | None = None
    adapt_weights: Callable | None = None
    ignore: tuple[str, ...] = ()


_REGISTRY: dict[str, EncoderSpec] = {}


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    """Add ``spec`` to the registry (a name may be registered once)."""
    if spec.name in _REGISTRY:
        msg = f"encoder {spec.name!r} is already registered"
        raise ValueError(msg)
    _REGISTRY[spec.name] = spec
    return spec


def _load_families() -> None:
    from . import efficientnet, random_cnn, resnet, vits  # noqa: F401  (registration side effects)


def list_encoders() -> list[str]:
    """Names of every registered encoder."""
    _load_families()
    return sorted(_REGISTRY)


def get_spec(name: str) -> EncoderSpec:
    """The spec of ``name`` (or of a ``finetuned:DIR`` folder); an unknown name raises with the closest names."""
    _load_families()
    from .finetuned import finetuned_spec, is_finetuned

    if is_finetuned(name):
        return finetuned_spec(name)
    if name not in _REGISTRY:
        msg = f"unknown encoder {name!r}{did_you_mean(name, _REGISTRY)}; registered: {', '.join(sorted(_REGISTRY))}"
        raise ValueError(msg)
    return _REGISTRY[name]


def build_backbone(name: str, **overrides) -> torch.nn.Module:
    """The backbone of encoder ``name`` with random weights (step one of :func:`create_encoder`)."""
    return get_spec(name).build(**overrides)


def load_weights(name: str, backbone: torch.nn.Module, path) -> None:
    """Load the weights file ``path`` into ``backbone`` (step two): keys renamed by the spec, strict otherwise."""
    from .weights import load_into, load_state_dict

    spec = get_spec(name)
    sd = load_state_dict(path)
    if spec.adapt_weights is not None:
        sd = spec.adapt_weights(backbone, sd)
    load_into(backbone, sd, path, ignore=spec.ignore)


def create_encoder(name: str, weights=None, device: str | torch.device | None = None, **overrides):
    """Build encoder ``name`` with weights from ``weights`` (file or HF snapshot folder) or ``$SPADE_ST_WEIGHTS``.

    Returns an :class:`~spade_st.encoders.base.Encoder` in eval mode on ``device`` (default: CUDA if
    available, else CPU). ``overrides`` go to the architecture (tests use them to shrink models).
    """
    from functools import partial

    from .base import Encoder
    from .finetuned import is_finetuned
    from .weights import resolve_weights

    if is_finetuned(name) and weights is not None:
        msg = f"{name} carries its own weights (model.safetensors); drop --weights"
        raise ValueError(msg)
    spec = get_spec(name)
    path = resolve_weights(spec, weights)  # a missing file is refused before anything is built
    backbone = build_backbone(name, **overrides)
    if path is not None:
        load_weights(name, backbone, path)
    pool = partial(spec.pool, backbone) if spec.pool is not None else torch.nn.Identity()
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return Encoder(spec, backbone, pool, weights_path=path).to(dev).eval()
