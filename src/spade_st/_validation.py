"""Error types and small checks shared by every stage.

Every error says what was found, what was expected and how to fix it, and names the file, key or sample.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class SpadeInputError(ValueError):
    """Bad user input: a file, a value or a combination that spade-st cannot use as given."""


class DataWarning(UserWarning):
    """Input that works but is probably not what the user meant (upsampled patches, a dropped share of spots,
    an expert made of one section); the message says what to check."""


class LayoutError(SpadeInputError):
    """A HEST-layout root is incomplete or inconsistent; the message lists every problem."""

    def __init__(self, root: Path | str, problems: list[str]):
        self.root = Path(root)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        msg = f"{len(self.problems)} problem(s) in the data root {self.root}:\n{lines}"
        super().__init__(msg)


def check_sample_id(sample_id: str) -> str:
    """Return ``sample_id`` if it is usable as a file name, else raise with the rule."""
    if not isinstance(sample_id, str) or not _ID_RE.match(sample_id) or sample_id in {".", ".."}:
        msg = (
            f"sample id {sample_id!r} is not usable as a file name: use letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (e.g. 'A1', 'TENX95')"
        )
        raise SpadeInputError(msg)
    return sample_id


def require_file(path: Path | str, what: str, fix: str = "") -> Path:
    """Return ``path`` as a Path if it is an existing file, else raise FileNotFoundError naming it."""
    p = Path(path)
    if not p.is_file():
        extra = f"; {fix}" if fix else ""
        msg = f"{what} not found: {p}{extra}"
        raise FileNotFoundError(msg)
    return p


def check_pixel_size(value: float | None, source: str) -> float:
    """Validate a pixel size in µm/px (positive, finite, plausible for H&E)."""
    if value is None:
        msg = (
            f"unknown pixel size for {source}: the image carries none and none was given; "
            "pass --pixel-size-um (µm per pixel of the full-resolution image, e.g. 0.25 at 40x, 0.5 at 20x)"
        )
        raise SpadeInputError(msg)
    v = float(value)
    if not np.isfinite(v) or v <= 0 or v > 100:
        msg = f"pixel size {value!r} µm/px for {source} is not plausible: expected a positive number below 100"
        raise SpadeInputError(msg)
    return v


def check_raw_counts(x, source: str) -> None:
    """Raise unless ``x`` (dense or sparse) holds non-negative integer counts."""
    data = x.data if hasattr(x, "data") and not isinstance(x, np.ndarray) else np.asarray(x)
    data = np.asarray(data)
    if data.size == 0:
        return
    if not np.issubdtype(data.dtype, np.number):
        msg = f"{source}: counts have dtype {data.dtype}, expected numbers (raw integer counts)"
        raise SpadeInputError(msg)
    if not np.all(np.isfinite(data)):
        msg = f"{source}: counts contain NaN or Inf; raw counts must be finite integers"
        raise SpadeInputError(msg)
    if np.any(data < 0):
        msg = f"{source}: counts contain negative values; raw counts must be >= 0"
        raise SpadeInputError(msg)
    if not np.issubdtype(data.dtype, np.integer) and np.any(data != np.round(data)):
        msg = (
            f"{source}: counts are not integers (e.g. log-normalised values); spade-st needs RAW counts. "
            "Pass the raw matrix (e.g. adata.layers['counts'] via --layer counts, or adata.raw)"
        )
        raise SpadeInputError(msg)


def check_unique(names, what: str, source: str) -> None:
    """Raise if ``names`` has duplicates, listing a few."""
    arr = np.asarray(list(names), dtype=object)
    uniq, counts = np.unique(arr.astype(str), return_counts=True)
    dups = uniq[counts > 1]
    if dups.size:
        shown = ", ".join(map(str, dups[:5]))
        msg = f"{source}: {dups.size} duplicate {what} (e.g. {shown}); {what} must be unique"
        raise SpadeInputError(msg)


def read_yaml_mapping(path, what: str) -> dict:
    """A YAML file that must hold a mapping; missing, unparsable or non-mapping files are clear errors."""
    import yaml

    p = require_file(path, what)
    try:
        values = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        msg = f"cannot parse {p}: {err}"
        raise SpadeInputError(msg) from err
    if not isinstance(values, dict):
        msg = f"{p} must be a mapping of option: value"
        raise SpadeInputError(msg)
    return values


def did_you_mean(word: str, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` (case-insensitive), or ``""``."""
    import difflib

    lower = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(lower), n=1, cutoff=0.6)
    return f" (did you mean {lower[close[0]]!r}?)" if close else ""


def coerce_value(value, hint, where: str):
    """``value`` converted to the annotated type ``hint`` (int, float, bool, str, Path, lists and ``X | None``),
    so ``lr: 1e-4`` (a string to YAML 1.1) is a float; a value that does not convert is a one-line error
    naming ``where``, the value and the type."""
    import types
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None:
            return None
        errors = []
        for a in args:
            try:
                return coerce_value(value, a, where)
            except SpadeInputError as err:
                errors.append(err)
        raise errors[0]
    origin = typing.get_origin(hint) or hint
    if origin in (list, tuple):
        items = value if isinstance(value, list | tuple) else [value]
        inner = args[0] if args else str
        return origin(coerce_value(v, inner, where) for v in items)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "yes", "on", "1"):
                return True
            if text in ("false", "no", "off", "0"):
                return False
            raise ValueError
        if hint is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if hint in (str, Path):
            if isinstance(value, dict | list):
                raise ValueError
            return hint(value)
    except (TypeError, ValueError):
        kind = {int: "an integer", float: "a number", bool: "true or false"}.get(hint, getattr(hint, "__name__", hint))
        msg = f"{where} must be {kind}, got {value!r}"
        raise SpadeInputError(msg) from None
    return value
