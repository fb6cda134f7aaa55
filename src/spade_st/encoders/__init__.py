"""Patch encoders (registry + one file per family) and feature extraction."""

from .base import Encoder
from .registry import (
    EncoderSpec,
    build_backbone,
    create_encoder,
    get_spec,
    list_encoders,
    load_weights,
    register_encoder,
)

__all__ = [
    "Encoder",
    "EncoderSpec",
    "build_backbone",
    "create_encoder",
    "get_spec",
    "list_encoders",
    "load_weights",
    "register_encoder",
]
