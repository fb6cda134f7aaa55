"""Optional dependencies: one import helper whose error names the extra to install."""

from __future__ import annotations

import importlib

#: extra -> what it installs (see pyproject.toml)
EXTRAS = {
    "plot": "umap-learn",
    "genes": "scanpy",
    "faiss": "faiss-cpu",
    "survival": "scikit-survival",
    "encoders": "timm",
    "scverse": "lazyslide, wsidata, spatialdata",
}


def require(module: str, package: str | None = None, extra: str | None = None):
    """Import ``module``; if it is missing, an ImportError saying ``pip install 'spade-st[extra]'`` (or the
    package) instead of a bare ModuleNotFoundError."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and err.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there but one of its own dependencies is missing: show that
        how = f"pip install 'spade-st[{extra}]'" if extra else f"pip install {package or module}"
        msg = f"this needs the optional package {package or module!r}, which is not installed: {how}"
        raise ImportError(msg) from err
