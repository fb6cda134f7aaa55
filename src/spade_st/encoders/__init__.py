"""Patch encoders (registry + one file per family) and feature extraction."""

from .base import Encoder
from .registry import EncoderSpec, create_encoder, get_spec, list_encoders, register_encoder

__all__ = ["Encoder", "EncoderSpec", "create_encoder", "get_spec", "list_encoders", "register_encoder"]
