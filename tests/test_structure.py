"""The package's rooms: every import goes to the same or a lower pipeline stage (read with an AST scan, function-
level imports included), so the top-level package graph has no cycles."""

from __future__ import annotations

import ast
from collections import defaultdict

from conftest import REPO

SRC = REPO / "src" / "spade_st"
#: stage order: a package may import its own stage or a lower one (private top-level modules are shared helpers)
LAYERS = {
    "": 0,  # spade_st itself (__version__) and the private _*.py helpers
    "io": 1,
    "genes": 1,
    "encoders": 2,
    "datasets": 2,
    "experts": 3,
    "train": 4,
    "eval": 5,
    "pl": 6,
    "tl": 7,
    "demo": 8,
    "run": 8,
    "doctor": 8,
    "lazyslide": 8,
    "_commands": 9,
    "cli": 10,
}


def _stage(module: str) -> str:
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else ""
    return "" if name.startswith("_") and name not in LAYERS else name


def _imports() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for p in SRC.rglob("*.py"):
        rel = list(p.relative_to(SRC.parent).with_suffix("").parts)
        is_pkg = rel[-1] == "__init__"
        module = ".".join(rel[:-1] if is_pkg else rel)
        pkg = module.split(".") if is_pkg else module.split(".")[:-1]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target + "." + a.name for a in node.names] if not node.module else [target]
                edges[module].update(names)
            elif isinstance(node, ast.Import):
                edges[module].update(a.name for a in node.names if a.name.startswith("spade_st"))
    return edges


def test_no_upward_imports():
    bad = []
    for src, targets in _imports().items():
        for t in targets:
            a, b = _stage(src), _stage(t)
            if a in LAYERS and b in LAYERS and LAYERS[b] > LAYERS[a]:
                bad.append(f"{src} imports {t} ({a} -> {b})")
    assert not bad, "\n".join(sorted(bad))


def test_every_stage_is_known():
    stages = {_stage(m) for m in _imports()} | {
        _stage(t) for ts in _imports().values() for t in ts if t.startswith("spade_st")
    }
    assert stages <= set(LAYERS), stages - set(LAYERS)


#: top-level test modules that check the whole package rather than one module
CROSS_CUTTING = {"test_examples", "test_readme", "test_structure", "test_hostile", "test_properties"}


def test_tests_mirror_src():
    """tests/<pkg>/ for a package of src/spade_st; a top-level tests/test_<module>*.py for a top-level module."""
    tests = REPO / "tests"
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert folders <= packages, f"test folders without a package: {sorted(folders - packages)}"
    modules = {p.stem for p in SRC.glob("*.py") if not p.stem.startswith("_")}
    stray = [
        p.stem
        for p in tests.glob("test_*.py")
        if p.stem not in CROSS_CUTTING
        and not any(p.stem == f"test_{m}" or p.stem.startswith(f"test_{m}_") for m in modules)
    ]
    assert not stray, f"top-level tests that belong in a package folder: {stray}"
