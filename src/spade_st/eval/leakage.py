"""The leakage guard: an evaluation refuses to score samples (or patients) that the model it evaluates trained on.

A model's training samples are those of its saved split that trained or validated it (``split.train`` and
``split.val``: validation chose its epochs). An embedding folder names its model in ``embed_config.json``
(written by ``spade-st embed``); raw encoder features name none and are never refused. Patients are compared
where the sample table has them, as (organ, patient) pairs: HEST reuses names like "Patient 1" across studies.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .._validation import SpadeInputError

#: the flag (CLI) / key (manifest) that lets a deliberate in-sample check through
ALLOW_FLAG = "--allow-train-overlap"


def model_training_samples(model_dir: Path | str) -> list[str]:
    """Samples that trained or validated the model in ``model_dir`` (from its ``config.json``'s split)."""
    from ..io.runs import ModelLayout

    path = ModelLayout(model_dir).config
    if not path.is_file():
        return []
    split = json.loads(path.read_text()).get("split") or {}
    return list(dict.fromkeys([*split.get("train", []), *split.get("val", [])]))


def source_model(folder: Path | str) -> Path | None:
    """The model an embedding folder was made with (``embed_config.json``), or None for raw features."""
    cfg = Path(folder) / "embed_config.json"
    if not cfg.is_file():
        return None
    model = json.loads(cfg.read_text()).get("model")
    return Path(model) if model else None


def _patients(table: pd.DataFrame | None, ids) -> dict[str, tuple[str, str]]:
    if table is None or "patient" not in table.columns:
        return {}
    out = {}
    for i in ids:
        if i in table.index and pd.notna(table.loc[i, "patient"]) and str(table.loc[i, "patient"]).strip():
            organ = table.loc[i, "organ"] if "organ" in table.columns else ""
            out[i] = (str(organ), str(table.loc[i, "patient"]))
    return out


def overlap(trained: list[str], scored: list[str], table: pd.DataFrame | None = None) -> dict[str, str]:
    """Scored samples that ``trained`` covers: id -> why (the same sample, or a sample of the same patient)."""
    trained_set = set(map(str, trained))
    found = {s: "trained on it" for s in map(str, scored) if s in trained_set}
    ordered = sorted(trained_set)  # the training sample named for a patient is the first by id, every run
    pt, ps = _patients(table, ordered), _patients(table, [s for s in map(str, scored) if s not in found])
    by_patient = {}
    for sid, pat in pt.items():
        by_patient.setdefault(pat, sid)
    for sid, pat in ps.items():
        if pat in by_patient:
            found[sid] = f"same patient ({pat[1]}) as training sample {by_patient[pat]}"
    return found


def check_no_overlap(
    models: dict[str, Path | None], scored: list[str], table: pd.DataFrame | None = None, allow: bool = False
) -> dict[str, dict[str, str]]:
    """Refuse (one-line error) when a source's model trained on a scored sample or patient.

    ``models``: source name -> its model folder (None: raw features). Returns the overlaps (source -> {sample:
    why}); with ``allow`` they are returned instead of refused, for the result table to say so.
    """
    found = {}
    for name, model in models.items():
        if model is None:
            continue
        hit = overlap(model_training_samples(model), scored, table)
        if hit:
            found[name] = hit
    if found and not allow:
        name, hit = next(iter(found.items()))
        shown = "; ".join(f"{s}: {why}" for s, why in list(hit.items())[:5]) + (" ..." if len(hit) > 5 else "")
        msg = (
            f"source {name!r} comes from the model {models[name]}, which trained on samples scored here ({shown}); "
            f"score held-out samples (pretrain --exclude them), or pass {ALLOW_FLAG} for a deliberate in-sample check"
        )
        raise SpadeInputError(msg)
    return found
