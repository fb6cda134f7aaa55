"""``spade-st doctor``: check the installation and, optionally, a data root; print what to fix."""

from __future__ import annotations

import os
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _check(name: str, ok: bool, detail: str, fix: str = "") -> tuple[str, bool, str, str]:
    return (name, ok, detail, fix)


def run_doctor(data: Path | None = None, weights_dir: Path | None = None) -> list[tuple[str, bool, str, str]]:
    """A list of (check, ok, detail, fix)."""
    out = []
    try:
        import torch

        out.append(_check("torch", True, torch.__version__))
        cuda = torch.cuda.is_available()
        out.append(
            _check(
                "GPU",
                True,
                torch.cuda.get_device_name(0) if cuda else "none visible (CPU only)",
                "" if cuda else "install a CUDA build of torch and check nvidia-smi to use a GPU",
            )
        )
    except ImportError:
        out.append(_check("torch", False, "not installed", "make install"))
    for pkg, mod, fix in (
        ("openslide-bin", "openslide", "pip install openslide-python openslide-bin"),
        ("faiss-cpu", "faiss", "pip install 'spade-st[faiss]' (scikit-learn is used without it)"),
        ("timm", "timm", "pip install 'spade-st[encoders]'"),
        ("scanpy", "scanpy", "pip install 'spade-st[genes]'"),
    ):
        try:
            __import__(mod)
            out.append(_check(pkg, True, version(pkg)))
        except (ImportError, PackageNotFoundError) as err:
            out.append(_check(pkg, False, f"cannot import {mod}: {err}", fix))
    from .encoders import get_spec, list_encoders
    from .encoders.weights import ENV, resolve_weights

    wd = weights_dir or (Path(os.environ[ENV]) if os.environ.get(ENV) else None)
    for name in list_encoders():
        spec = get_spec(name)
        if not spec.needs_weights:
            continue
        try:
            p = resolve_weights(spec, (wd / name) if wd and (wd / name).exists() else None)
            out.append(_check(f"weights {name}", True, str(p)))
        except FileNotFoundError:
            where = f"{wd}/{name}/" if wd else f"${ENV}/{name}/ (set ${ENV})"
            out.append(_check(f"weights {name}", False, "not found", f"put model.safetensors in {where}"))
    target = data if data is not None else Path.cwd()
    free = shutil.disk_usage(target if target.exists() else Path.cwd()).free / 1e9
    out.append(_check("free disk", free > 10, f"{free:.1f} GB at {target}", "free space: HEST-1k features need ~50 GB"))
    if data is not None:
        from .io import read_hest

        try:
            samples = read_hest(data)
            out.append(_check("data root", True, f"{len(samples)} samples, layout valid"))
            nopx = [s.id for s in samples if s.pixel_size_um is None]
            out.append(
                _check(
                    "pixel sizes",
                    not nopx,
                    "all present" if not nopx else f"missing for {nopx[:5]}",
                    "fill pixel_size_um_estimated in metadata.csv",
                )
            )
        except (ValueError, FileNotFoundError) as err:
            out.append(
                _check("data root", False, str(err).splitlines()[0], "see the problems listed by spade-st check")
            )
    return out


def format_report(rows) -> str:
    lines = []
    for name, ok, detail, fix in rows:
        mark = "ok " if ok else "FIX"
        lines.append(f"[{mark}] {name:28s} {detail}" + (f"\n      -> {fix}" if (fix and not ok) else ""))
    return "\n".join(lines)
