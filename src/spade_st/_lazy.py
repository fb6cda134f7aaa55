"""Lazy package attributes: ``pkg.name`` imports the submodule that defines it on first use (fast imports)."""

from __future__ import annotations

import importlib


def lazy(package: str, exports: dict[str, str], submodules: set[str]):
    """A module ``__getattr__`` for ``package``: ``exports`` maps a name to its submodule."""

    def __getattr__(name: str):
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        msg = f"module {package!r} has no attribute {name!r}"
        raise AttributeError(msg)

    return __getattr__
