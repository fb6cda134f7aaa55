"""``spade-st doctor``: check the installation and, optionally, a config and a data root; print what to fix.

Each check is *needed* or *optional*. Needed: torch; with ``--config NAME``, what that config runs on (its
encoder's weights and the packages its encoder and k-means backend import); with ``--data ROOT``, the data
checks. Everything else (a GPU, other encoders' weights, packages the chosen setup does not import, free disk)
is optional: its line says so, and only a failed needed check makes ``spade-st doctor`` exit 1.
"""

from __future__ import annotations

import os
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NamedTuple

#: pip distribution, import name and the fix, of each optional package doctor looks at
PACKAGES = {
    "openslide-bin": ("openslide", "pip install openslide-python openslide-bin"),
    "faiss-cpu": ("faiss", "pip install 'spade-st[faiss]' (scikit-learn is used without it)"),
    "timm": ("timm", "pip install 'spade-st[encoders]'"),
    "torchvision": ("torchvision", "pip install 'spade-st[encoders]'"),
    "scanpy": ("scanpy", "pip install 'spade-st[genes]'"),
    "lazyslide": ("lazyslide", "pip install 'spade-st[scverse]' (spade_st.lazyslide)"),
    "spatialdata": ("spatialdata", "pip install 'spade-st[scverse]' (convert/export spatialdata)"),
}


class Check(NamedTuple):
    """One line of the report: ``needed`` checks that fail make the exit status 1."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    needed: bool = False


def _encoder_packages(name: str) -> set[str]:
    """The pip packages that building encoder ``name`` imports (timm for the ViTs and EfficientNet)."""
    from .encoders import get_spec

    module = getattr(get_spec(name).build, "__module__", "") or ""
    if module.endswith("resnet"):
        return {"torchvision"}
    if module.endswith("random_cnn"):
        return set()
    return {"timm"}


def _config_needs(config: str | Path | None) -> tuple[str | None, set[str]]:
    """(encoder, pip packages) the pretraining config ``config`` runs on; (None, {}) without a config."""
    if config is None:
        return None, set()
    from .train.config import load_config

    cfg = load_config(config, require=())
    encoder = cfg.encoder or "efficientnet_lite0"
    packages = _encoder_packages(encoder)
    if cfg.clustering.backend == "faiss":
        packages.add("faiss-cpu")
    return encoder, packages


def run_doctor(
    data: Path | None = None, weights_dir: Path | None = None, config: str | Path | None = None
) -> list[Check]:
    """Every check, needed or optional for the setup named by ``config`` (a config name or YAML) and ``data``.

    Parameters
    ----------
    data
        HEST-layout root whose layout and pixel sizes are checked (needed checks).
    weights_dir
        Encoder weights folder (default: ``$SPADE_ST_WEIGHTS``).
    config
        Pretraining config: its encoder's weights and the packages it imports become needed checks.

    Returns
    -------
    list of Check
    """
    encoder, packages = _config_needs(config)
    out = []
    try:
        import torch

        out.append(Check("torch", True, torch.__version__, needed=True))
        cuda = torch.cuda.is_available()
        gpu = torch.cuda.get_device_name(0) if cuda else "none visible (CPU only)"
        out.append(Check("GPU", True, gpu, "" if cuda else "install a CUDA build of torch and check nvidia-smi"))
    except ImportError:
        out.append(Check("torch", False, "not installed", "make install", needed=True))
    for pkg, (mod, fix) in PACKAGES.items():
        try:
            __import__(mod)
            out.append(Check(pkg, True, version(pkg), needed=pkg in packages))
        except (ImportError, PackageNotFoundError) as err:
            out.append(Check(pkg, False, f"cannot import {mod}: {err}", fix, needed=pkg in packages))
    from .encoders import get_spec, list_encoders
    from .encoders.weights import ENV, resolve_weights

    wd = weights_dir or (Path(os.environ[ENV]) if os.environ.get(ENV) else None)
    for name in list_encoders():
        spec = get_spec(name)
        if not spec.needs_weights:
            continue
        try:
            p = resolve_weights(spec, (wd / name) if wd and (wd / name).exists() else None)
            out.append(Check(f"weights {name}", True, str(p), needed=name == encoder))
        except FileNotFoundError:
            where = f"{wd}/{name}/" if wd else f"${ENV}/{name}/ (set ${ENV})"
            fix = f"put model.safetensors in {where}"
            out.append(Check(f"weights {name}", False, "not found", fix, needed=name == encoder))
    target = data if data is not None else Path.cwd()
    free = shutil.disk_usage(target if target.exists() else Path.cwd()).free / 1e9
    out.append(Check("free disk", free > 10, f"{free:.1f} GB at {target}", "free space: HEST-1k features need ~50 GB"))
    if data is not None:
        out += _data_checks(data)
    return out


def _data_checks(data: Path) -> list[Check]:
    from .io import read_hest

    try:
        samples = read_hest(data)
    except (ValueError, FileNotFoundError) as err:
        return [Check("data root", False, str(err).splitlines()[0], "see `spade-st check --data ROOT`", True)]
    nopx = [s.id for s in samples if s.pixel_size_um is None]
    return [
        Check("data root", True, f"{len(samples)} samples, layout valid", needed=True),
        Check(
            "pixel sizes",
            not nopx,
            "all present" if not nopx else f"missing for {nopx[:5]}",
            "fill pixel_size_um_estimated in metadata.csv",
            needed=True,
        ),
    ]


def failed_needed(rows) -> list[str]:
    """Names of the needed checks that failed (the exit status is 1 when there is any)."""
    return [r.name for r in rows if r.needed and not r.ok]


def format_report(rows) -> str:
    """One line per check (``[ok ]``, ``[FIX]`` for a needed one, ``[opt]`` for an optional one), then a verdict."""
    lines = []
    for r in rows:
        mark = "ok " if r.ok else ("FIX" if r.needed else "opt")
        detail = r.detail if r.ok or r.needed else f"{r.detail} (optional)"
        lines.append(f"[{mark}] {r.name:28s} {detail}" + (f"\n      -> {r.fix}" if (r.fix and not r.ok) else ""))
    bad, optional = failed_needed(rows), sum(not r.ok and not r.needed for r in rows)
    if bad:
        lines.append(f"doctor: {len(bad)} needed check(s) failed: {', '.join(bad)}")
    else:
        lines.append(f"doctor: ready ({optional} optional item(s) missing)" if optional else "doctor: ready")
    return "\n".join(lines)
