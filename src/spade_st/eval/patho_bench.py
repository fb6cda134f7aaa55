"""Patho-Bench's split files, its few-shot draw and its ``{split}_metrics_summary.json`` (read and written as
Patho-Bench 660e770 does; no Patho-Bench code or dependency).

A split (``k=all.tsv`` from the HF dataset MahmoodLab/Patho-Bench, ``<source>/<task>/``) has one row per slide:
the task's sample column (``sample_col`` of its ``config.yaml``, e.g. ``case_id`` or ``slide_id``), ``slide_id``,
the label column (``task_col``), the ``extra_cols`` (survival: ``<task_col>_days`` and ``<task_col>_event``) and
``fold_0``, ``fold_1``, ... holding ``train`` / ``val`` / ``test`` / ``-1`` (unused). Rows with a NaN label are
dropped; the rows of one sample must agree on label and folds. Samples keep the file's first-appearance order.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._validation import SpadeInputError, read_yaml_mapping, require_file

ROLES = ("train", "val", "test", "-1")
CONFIG_KEYS = {"sample_col": str, "extra_cols": list, "label_dict": dict, "metrics": list, "task_col": str}
#: our metric names -> Patho-Bench's (``ClassificationMixin`` / ``SurvivalMixin``)
METRIC_NAMES = {"auroc": "macro-ovr-auc", "balanced_accuracy": "bacc", "c_index": "cindex"}


@dataclass
class PathoBenchSplit:
    """One Patho-Bench task: per sample (file order) its slides, label, survival columns and fold roles.

    Attributes
    ----------
    samples : list of str
        Sample ids (``sample_col``), in the order they first appear in the file.
    slides : list of list of str
        The ``slide_id`` of each sample's rows.
    labels : numpy.ndarray
        The ``task_col`` value of each sample (int for classification).
    folds : numpy.ndarray
        (n_samples, n_folds) of ``train`` / ``val`` / ``test`` / ``-1``.
    times, events : numpy.ndarray or None
        ``<task_col>_days`` and ``<task_col>_event`` of each sample (survival tasks).
    info : dict
        The task's ``config.yaml``.
    """

    samples: list[str]
    slides: list[list[str]]
    labels: np.ndarray
    folds: np.ndarray
    times: np.ndarray | None
    events: np.ndarray | None
    info: dict


def _as_int(value) -> int | None:
    """``value`` as an int when it is a whole number (``1``, ``1.0``, ``"1"``), else None."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if f.is_integer() else None


def _fail(where, text: str):
    raise SpadeInputError(f"{where}: {text}")


def read_config(path: Path | str) -> dict:
    """The task ``config.yaml``: ``sample_col``, ``extra_cols``, ``label_dict``, ``metrics``, ``task_col``."""
    info = read_yaml_mapping(path, "Patho-Bench task config")
    for key, kind in CONFIG_KEYS.items():
        if not isinstance(info.get(key), kind):
            _fail(path, f"needs {key} ({kind.__name__}); use the config.yaml shipped beside the split's k=all.tsv")
    return info


def read_split(split: Path | str, config: Path | str, survival: bool) -> PathoBenchSplit:
    """Read and check a Patho-Bench split; every problem is a one-line :class:`SpadeInputError`."""
    info = read_config(config)
    if (info.get("task_type") == "survival") != survival and "task_type" in info:
        _fail(config, f"task_type {info['task_type']!r} does not match the manifest's type; fix either")
    p = require_file(split, "Patho-Bench split")
    sep = "\t" if p.suffix == ".tsv" else ","
    df = pd.read_csv(p, sep=sep, dtype={info["sample_col"]: str, "slide_id": str, "case_id": str})
    df = df.drop(columns=[c for c in df.columns if c == "Unnamed: 0"])
    task = info["task_col"]
    surv = [f"{task}_days", f"{task}_event"] if survival else []
    need = [info["sample_col"], "slide_id", task, *info["extra_cols"], *surv]
    missing = [c for c in dict.fromkeys(need) if c not in df.columns]
    if missing:
        _fail(p, f"lacks column(s) {missing} named by {config}; use the k=all.tsv that came with that config")
    fold_cols = sorted((c for c in df.columns if "fold_" in c), key=lambda c: int(c.split("_")[-1]))
    if not fold_cols:
        _fail(p, "has no fold_0, fold_1, ... columns; a Patho-Bench split assigns train/val/test per fold")
    df = df.dropna(subset=[task])
    df[fold_cols] = df[fold_cols].astype(str)
    bad = sorted(set(df[fold_cols].to_numpy().ravel()) - set(ROLES))
    if bad:
        _fail(p, f"fold values {bad[:5]} are not among {list(ROLES)}")
    samples, slides, rows = [], [], []
    for sid, g in df.groupby(info["sample_col"], sort=False):
        for cols in ([task], fold_cols, surv):
            if cols and len(g[cols].drop_duplicates()) > 1:
                _fail(p, f"the rows of sample {sid} disagree on {cols}; give every slide of a sample the same values")
        samples.append(str(sid))
        slides.append(g["slide_id"].astype(str).tolist())
        rows.append(g.iloc[0])
    first = pd.DataFrame(rows)
    labels = first[task].to_numpy()
    if not survival:
        keys = {_as_int(k) for k in info["label_dict"]}
        bad = sorted({str(v) for v in labels if _as_int(v) not in keys or _as_int(v) is None})
        if bad:
            _fail(p, f"labels {bad[:5]} of {task} are not label_dict keys {sorted(info['label_dict'])}; fix the split")
        labels = np.array([_as_int(v) for v in labels], dtype=np.int64)
    folds = first[fold_cols].to_numpy(dtype=str)
    for k, col in enumerate(fold_cols):
        for role in ("train", "test"):
            if not (folds[:, k] == role).any():
                _fail(p, f"{col} has no {role} rows; every fold needs train and test samples")
    times = first[surv[0]].to_numpy(float) if survival else None
    events = first[surv[1]].to_numpy(int) if survival else None
    return PathoBenchSplit(samples, slides, labels, folds, times, events, info)


def sample_fewshots(folds: np.ndarray, labels: np.ndarray, num_shots: int, seed: int = 42) -> np.ndarray:
    """Patho-Bench's ``DataSplit.sample_fewshots`` (one bootstrap): a new fold table.

    Every ``train`` becomes ``-1``; then with ``np.random.seed(seed)`` (here a private ``RandomState``, the same
    stream), fold by fold and class by class in ascending label order (the iteration order of Patho-Bench's set of
    integer labels), ``num_shots`` samples are drawn without replacement by ``np.random.choice`` from that fold's
    ``-1`` samples of the class, in file order, and set to ``train``. The pool includes samples that were already
    ``-1`` in the file, as in Patho-Bench. A class with fewer samples keeps them all (a warning, no draw).
    """
    out = np.where(folds == "train", "-1", folds).astype(object)
    rs = np.random.RandomState(seed)
    for k in range(out.shape[1]):
        for c in sorted(set(labels.tolist())):
            pool = np.flatnonzero((out[:, k] == "-1") & (labels == c))
            if len(pool) < num_shots:
                warnings.warn(
                    f"fold_{k}: class {c} has {len(pool)} samples, fewer than {num_shots} shots", stacklevel=2
                )
                chosen = pool
            else:
                chosen = rs.choice(pool, num_shots, replace=False)
            out[chosen, k] = "train"
    return out.astype(str)


def _fmt(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def mean_se(per_fold: list[dict[str, float | None]]) -> dict:
    """``{metric: {mean, se, formatted}}``: mean over folds with a value, population std / sqrt(all folds)."""
    out = {}
    for key in per_fold[0]:
        vals = [v for v in (f.get(key) for f in per_fold) if v is not None]
        if not vals:
            out[key] = {"mean": None, "se": None, "formatted": "N/A"}
            continue
        m, se = float(np.mean(vals)), float(np.std(vals) / np.sqrt(len(per_fold)))
        out[key] = {"mean": m, "se": se, "formatted": f"{m:.3f} ± {se:.3f}"}
    return out


def bootstrap_ci(scores: list[dict[str, float | None]]) -> dict:
    """``{metric: {mean, lower, upper, formatted}}`` over bootstrap scores (2.5 and 97.5 percentiles)."""
    out = {}
    for key in scores[0]:
        vals = [s.get(key) for s in scores]
        if any(v is None for v in vals):
            out[key] = {"mean": None, "lower": None, "upper": None, "formatted": "N/A"}
            continue
        m, lo, hi = float(np.mean(vals)), float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))
        out[key] = {"mean": m, "lower": lo, "upper": hi, "formatted": f"{m:.3f} ({lo:.3f}-{hi:.3f})"}
    return out


def summary(folds: list[tuple], score, n_boot: int = 100, seed: int = 0) -> dict:
    """Patho-Bench's summary of one experiment from per-fold test ``(truth..., prediction)`` tuples.

    ``score(*fold)`` gives ``{patho_bench_metric: value or None}``. Several folds: :func:`mean_se` of the per-fold
    scores; one fold (or one test sample per fold): ``n_boot`` resamples with replacement of the pooled test
    samples (``RandomState(seed)``), then :func:`bootstrap_ci`.
    """
    if len(folds) > 1 and all(len(f[0]) > 1 for f in folds):
        return mean_se([score(*f) for f in folds])
    pooled = [np.concatenate(parts) for parts in zip(*folds, strict=True)]
    rs = np.random.RandomState(seed)
    draws = (rs.choice(len(pooled[0]), len(pooled[0]), replace=True) for _ in range(n_boot))
    return bootstrap_ci([score(*(a[i] for a in pooled)) for i in draws])


def renamed(values: dict[str, float], ours: tuple[str, ...]) -> dict[str, float | None]:
    """The metrics ``ours`` under Patho-Bench's names; one not computed (AUC on one class) is None."""
    return {METRIC_NAMES[k]: _fmt(values.get(k)) for k in ours}
