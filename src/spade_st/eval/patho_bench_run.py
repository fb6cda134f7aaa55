"""Slide tasks on a Patho-Bench split: its folds replace our own CV (``split: {patho_bench: ..., config: ...}``).

Per fold, the development samples are its ``train`` and ``val`` rows (our probes choose epochs / regularisation
by their own inner CV on them) and its ``test`` rows are scored; ``-1`` rows are left out. A sample is the split's
``sample_col``: its slides' bags (``<slide_id>.h5`` in each source folder) are concatenated, as Patho-Bench's
``combine_slides_per_patient``. Beside our tables this writes ``patho_bench_folds.csv`` (fold, sample, role: the
samples each fold used) and, per source and probe, ``patho_bench/<source>/<probe>/test_metrics_summary.json`` in
Patho-Bench's schema with its metric names (``macro-ovr-auc``, ``bacc``; ``cindex``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._atomic import atomic_write_json, atomic_write_text
from .._validation import SpadeInputError
from .patho_bench import METRIC_NAMES, PathoBenchSplit, read_split, renamed, sample_fewshots, summary

CLASSIFICATION = ("auroc", "balanced_accuracy")


def load_split(task) -> PathoBenchSplit:
    """The task's split, few-shot drawn when ``shots`` is given, with every feature file checked: before any work."""
    sp = read_split(task.split["patho_bench"], task.split["config"], survival=task.type == "survival")
    if task.shots:
        sp.folds = sample_fewshots(sp.folds, sp.labels, task.shots)
    for name, folder in task.sources.items():
        absent = [s for slides in sp.slides for s in slides if not (Path(folder) / f"{s}.h5").is_file()]
        if absent:
            msg = (
                f"source {name}: {len(absent)} slide(s) of the split have no feature file, e.g. "
                f"{Path(folder) / absent[0]}.h5; extract them or drop their rows from the split"
            )
            raise SpadeInputError(msg)
    return sp


def _bags(folder: Path, sp: PathoBenchSplit) -> list[np.ndarray]:
    from ..io.features import read_features

    return [
        np.concatenate([read_features(Path(folder) / f"{s}.h5").features for s in slides]).astype(np.float32)
        for slides in sp.slides
    ]


def _probes(task, bags, sp: PathoBenchSplit, dev: np.ndarray, test: np.ndarray, seed: int) -> dict[str, tuple]:
    """Per probe, the fold's test ``(truth..., prediction)``."""
    keep = np.concatenate([dev, test])
    sub = [bags[i] for i in keep]
    sub_test = np.arange(len(dev), len(keep))
    if task.type == "slide_classification":
        from .mil import MILConfig, abmil_cv, mean_pool_probe

        y = sp.labels[keep]
        cfg = MILConfig(epochs=task.epochs, folds=task.folds, seed=seed)
        return {
            "abmil": (y[sub_test], abmil_cv(sub, y, sub_test, cfg)[0]),
            "linear": (y[sub_test], mean_pool_probe(sub, y, sub_test, seed=seed)),
        }
    from .survival import cox_mean_pool, predict_risk, train_survival_abmil

    t, e = sp.times[keep], sp.events[keep]
    dev_pos = np.arange(len(dev))
    model = train_survival_abmil(sub, t, e, dev_pos, epochs=task.epochs, seed=seed)
    return {
        "abmil_nll": (t[sub_test], e[sub_test], predict_risk(model, [sub[i] for i in sub_test])),
        "cox_mean": (t[sub_test], e[sub_test], cox_mean_pool(sub, t, e, dev_pos, sub_test)),
    }


def _score(task):
    from .mil import classification_metrics
    from .survival import c_index

    if task.type == "slide_classification":
        return lambda y, p: renamed(classification_metrics(y, p), CLASSIFICATION)
    return lambda t, e, r: renamed({"c_index": c_index(t, e, r)}, ("c_index",))


def run_split(task, sp: PathoBenchSplit, out: Path) -> pd.DataFrame:
    """Every source and probe on every fold of ``sp``; the long rows (``fold`` = ``fold_<k>``, ``k`` = shots)."""
    from .stats import long_table

    k = task.shots or "all"
    score, ours = _score(task), {theirs: mine for mine, theirs in METRIC_NAMES.items()}
    rows, used, preds = [], [], {}
    for name, folder in task.sources.items():
        bags = _bags(folder, sp)
        for f in range(sp.folds.shape[1]):
            role = sp.folds[:, f]
            fit_on = ("train",) if task.shots else ("train", "val")  # a few-shot draw rewrites train rows only
            dev, test = np.flatnonzero(np.isin(role, fit_on)), np.flatnonzero(role == "test")
            used += [
                {"source": name, "fold": f"fold_{f}", "sample": sp.samples[i], "role": role[i]}
                for i in np.concatenate([dev, test])
            ]
            for probe, fold in _probes(task, bags, sp, dev, test, seed=f).items():
                preds.setdefault((name, probe), []).append(fold)
                for metric, value in score(*fold).items():
                    where = {"source": name, "probe": probe, "metric": ours[metric], "k": k, "fold": f"fold_{f}"}
                    rows.append(where | {"value": np.nan if value is None else value})
    for (name, probe), folds in preds.items():
        atomic_write_json(out / "patho_bench" / name / probe / "test_metrics_summary.json", summary(folds, score))
    atomic_write_text(out / "patho_bench_folds.csv", pd.DataFrame(used).to_csv(index=False))
    return long_table(pd.DataFrame(rows).assign(task=task.name))
