"""Gene-expression evaluation protocols over sections: folds, rows matched by barcode, one score per fold.

Protocols (``PROTOCOLS``):

- ``within_patient``: leave one section out among the sections of one patient; the probe trains on that
  patient's other sections (serial sections: the easiest, most optimistic question);
- ``leave_one_patient_out``: every section of one patient is held out; the probe trains on the other patients'
  sections (the field's protocol for her2st and HEST-Benchmark's).

A fold's score is the mean over its test sections of the mean per-gene Pearson r on that section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._validation import SpadeInputError
from ..train.splits import spatial_blocks
from ._names import PROTOCOLS
from .genes import gene_target, match_barcodes, mean_pearson, predict_genes, top_variable_genes


@dataclass
class Fold:
    """One train/test division of sections."""

    protocol: str
    name: str
    train: list[str]
    test: list[str]


@dataclass
class Section:
    """One sample's spots that have features, in feature-file row order, with its expression targets."""

    id: str
    patient: str
    adata: object  #: the sample's AnnData restricted and ordered to the feature rows
    features: np.ndarray  #: (n_spots, D) encoder features, (n_spots, 0) when the section has none
    barcodes: np.ndarray
    targets: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def coords(self) -> np.ndarray:
        return np.asarray(self.adata.obsm["spatial"], dtype=np.float64)


def section(sample, barcodes, targets=("log1p", "cp10k"), features: np.ndarray | None = None) -> Section:
    """The spots ``barcodes`` of a HEST sample (in that order) with their targets and, optionally, features."""
    pos = match_barcodes(barcodes, sample.adata.obs_names, f"sample {sample.id}")
    a = sample.adata[pos].copy()
    return Section(
        id=sample.id,
        patient=str(sample.patient),
        adata=a,
        features=np.zeros((len(pos), 0), np.float32) if features is None else np.asarray(features, np.float32),
        barcodes=np.asarray(a.obs_names.astype(str)),
        targets={t: gene_target(a, t) for t in targets},
    )


def load_section(sample, features_file: Path | str, targets=("log1p", "cp10k")) -> Section:
    """A HEST sample's spots that have rows in ``features_file``, in the file's row order, matched by barcode."""
    from ..io.features import read_features

    fs = read_features(features_file)
    match_barcodes(fs.barcode, sample.adata.obs_names, f"feature file {features_file}")  # refuse before any work
    return section(sample, fs.barcode, targets, fs.features)


def rows_in_order(fs, barcodes, what: str) -> np.ndarray:
    """Rows of the feature set ``fs`` (features or embeddings) for ``barcodes``, in that order; every barcode
    must have exactly one row."""
    match_barcodes(fs.barcode, fs.barcode, what)  # no barcodes / duplicates: refused with the file's name
    pos = match_barcodes(barcodes, fs.barcode, f"the spots of {what}", among=f"rows of {what}")
    return np.asarray(fs.features, np.float32)[pos]


def make_folds(patient_of: dict[str, str], protocol: str) -> list[Fold]:
    """Folds of ``protocol`` over sections (``patient_of``: section id -> patient), in a stable order."""
    by_patient: dict[str, list[str]] = {}
    for sid, p in sorted(patient_of.items()):
        by_patient.setdefault(p, []).append(sid)
    folds = []
    if protocol == "within_patient":
        for secs in by_patient.values():
            if len(secs) >= 2:
                folds += [Fold(protocol, s, [t for t in secs if t != s], [s]) for s in secs]
    elif protocol == "leave_one_patient_out":
        if len(by_patient) >= 2:
            for p, secs in sorted(by_patient.items()):
                rest = [s for q, ss in sorted(by_patient.items()) if q != p for s in ss]
                folds.append(Fold(protocol, f"patient {p}", rest, list(secs)))
    else:
        msg = f"unknown protocol {protocol!r}; choose from {PROTOCOLS}"
        raise SpadeInputError(msg)
    return folds


def cv_groups(sections: list[Section]) -> np.ndarray:
    """Inner cross-validation groups of the training rows: one per section, or spatial blocks of a lone section."""
    if len(sections) >= 2:
        return np.concatenate([np.full(len(s.barcodes), i) for i, s in enumerate(sections)])
    return spatial_blocks(sections[0].coords)


def fold_genes(fold: Fold, sections: dict[str, Section], n_genes: int) -> list[str]:
    """The fold's genes: the ``n_genes`` most variable (log1p CP10k) over its training sections, present in all
    of its sections. The same genes serve every target, probe and source of the fold."""
    present = sorted(set.intersection(*(set(sections[s].adata.var_names) for s in fold.train + fold.test)))
    train = [sections[s].targets.get("cp10k") for s in fold.train]
    train = [
        gene_target(sections[s].adata, "cp10k") if t is None else t for s, t in zip(fold.train, train, strict=True)
    ]
    return top_variable_genes([t[present] for t in train], n_genes)


def score_fold(
    fold: Fold,
    sections: dict[str, Section],
    x: dict[str, np.ndarray],
    genes: list[str],
    target: str,
    probe: str,
) -> float:
    """Mean over the fold's test sections of the mean per-gene Pearson r of ``probe`` trained on ``x`` (rows of
    each section, in section order) of the training sections."""
    train = [sections[s] for s in fold.train]
    xtr = np.concatenate([x[s] for s in fold.train])
    ytr = np.concatenate([sections[s].targets[target][genes].to_numpy() for s in fold.train])
    xte = np.concatenate([x[s] for s in fold.test])
    pred = predict_genes(probe, xtr, ytr, xte, cv_groups(train))
    scores, start = [], 0
    for s in fold.test:
        n = len(sections[s].barcodes)
        yte = sections[s].targets[target][genes].to_numpy()
        scores.append(mean_pearson(pred[start : start + n], yte))
        start += n
    return float(np.mean(scores))
