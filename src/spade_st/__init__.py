"""spade-st: SPADE pathology embeddings shaped by spatial transcriptomics.

The public API, imported lazily so that ``import spade_st`` stays fast::

    spade_st.read_hest(root)                  # HEST-layout samples (spade_st.io)
    spade_st.create_encoder("uni", weights=…) # patch encoders (spade_st.encoders)
    spade_st.build_panel(samples)             # gene panel by name (spade_st.genes)
    spade_st.TwoStageClustering(), spade_st.SpadeModel.from_pretrained(dir)   # (spade_st.experts)
    spade_st.tl.extract / fit / embed / predict_expression   # the notebook layer, AnnData first
    spade_st.pl.embedding(adata, color="sample")              # plots from AnnData
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "read_hest": "io",
    "open_wsi": "io",
    "write_sample": "io",
    "create_encoder": "encoders",
    "list_encoders": "encoders",
    "GenePanel": "genes",
    "build_panel": "genes",
    "TwoStageClustering": "experts",
    "SpadeModel": "experts",
    "SpadeConfig": "experts",
    "import_released": "experts",
    "synthetic": "datasets",
    "ExpressionPredictor": "experts",
    "PretrainConfig": "train.config",
    "pretrain": "train.pretrain",
    "read_features": "tl._predict",
    "SpadeInputError": "_validation",
    "LayoutError": "_validation",
}
_SUBMODULES = {"io", "encoders", "genes", "experts", "train", "eval", "pl", "tl", "datasets"}

__all__ = ["__version__", *sorted(_EXPORTS), *sorted(_SUBMODULES)]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    msg = f"module 'spade_st' has no attribute {name!r}"
    raise AttributeError(msg)
