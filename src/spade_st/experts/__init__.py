"""SPADE core: two-stage clustering, stacked expert heads, BLEEP loss, MoDE routing, model artefact."""

from .clustering import TwoStageClustering, choose_k, seed_agreement
from .heads import StackedHeads
from .loss import bleep_loss, infonce_loss
from .model import SpadeConfig, SpadeModel
from .predictor import ExpressionPredictor
from .released import import_released
from .router import mix_experts, route_weights

__all__ = [
    "ExpressionPredictor",
    "SpadeConfig",
    "SpadeModel",
    "StackedHeads",
    "TwoStageClustering",
    "bleep_loss",
    "choose_k",
    "import_released",
    "infonce_loss",
    "mix_experts",
    "route_weights",
    "seed_agreement",
]
