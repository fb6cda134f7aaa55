"""Pretraining: patient-disjoint split, row store, the expert training loop (resumable, DDP) and the
expression head fitted at its end (``spade_st.train.pretrain.pretrain``, or ``spade_st.pretrain``).
Submodules load on first use."""

from .._lazy import lazy

_EXPORTS = {
    "PretrainConfig": "config",
    "load_config": "config",
    "builtin_configs": "config",
    "make_split": "splits",
    "fit_predictor": "predictor",
    "fit_predictor_from_root": "predictor",
}
_SUBMODULES = {"checkpoint", "config", "loop", "optim", "predictor", "pretrain", "projection", "splits", "store"}
__all__ = sorted(_EXPORTS) + sorted(_SUBMODULES)
__getattr__ = lazy(__name__, _EXPORTS, _SUBMODULES)
