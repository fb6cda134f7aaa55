"""HEST-Benchmark's result files, with HEST's keys (``spade-st bench hest`` writes them; HEST's tooling reads them).

Layout under the output folder (HEST's ``results_dir/<exp_code>/``), every JSON written with ``sort_keys=True,
indent=4`` and atomically:

- ``<task>/<encoder>/split<i>/results.json``: ``l2_errors``, ``r2_scores`` (lists over genes), ``pearson_corrs``
  (``[{name, pearson_corr}]`` in gene-list order), ``pearson_mean``, ``pearson_std`` (over genes, ddof 0) and the
  quartiles ``l2_error_q1..q3``, ``r2_score_q1..q3``; ``summary.json`` (the same plus ``n_train``, ``n_test``);
  ``config.json``; ``inference_dump.npz`` (``preds_all``, ``targets_all``: HEST's pickle, without pickle);
- ``<task>/<encoder>/results_kfold.json``: ``pearson_corrs`` (``[{name, pearson_corrs, mean, std}]`` sorted by
  mean, descending), ``pearson_mean``, ``pearson_std`` (over splits, ddof 0), ``mean_per_split``;
- ``<task>/enc_results.json``: ``{"results": [{encoder_name, pearson_mean, pearson_std}]}`` (best first);
- ``dataset_results.json``: ``{"results": [{dataset_name, results}], "average": {encoder: mean over tasks}}`` and
  ``dataset_results.csv`` (pandas' CSV with its index column: ``dataset``, ``<enc>_mean``, ``<enc>_std``).

A gene constant on a test split has no Pearson r (HEST's split mean would then be NaN): its ``pearson_corr`` is
NaN and the split's mean and std are over the other genes; the split's ``config.json`` lists it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .._atomic import atomic_path, atomic_write_text
from .genes import pearson_per_gene


def _py(obj):
    """JSON-ready: NumPy scalars and arrays as Python values, containers walked."""
    if isinstance(obj, dict):
        return {str(k): _py(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_py(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _py(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_hest_json(path: Path | str, obj) -> None:
    """``obj`` as HEST writes its JSON (``sort_keys=True, indent=4``), atomically."""
    atomic_write_text(path, json.dumps(_py(obj), sort_keys=True, indent=4))


def _mean(v) -> float:
    v = np.asarray(v, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def _std(v) -> float:
    v = np.asarray(v, np.float64)
    v = v[np.isfinite(v)]
    return float(v.std()) if len(v) else float("nan")


def split_results(pred: np.ndarray, truth: np.ndarray, genes: list[str]) -> dict:
    """HEST's ``results.json`` of one split: per-gene l2 error, r2 and Pearson r of ``pred`` vs ``truth``."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    l2 = ((pred - truth) ** 2).mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1 - ((truth - pred) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)
    r = pearson_per_gene(pred, truth)
    q = {}
    for key, v in (("l2_error", l2), ("r2_score", r2)):
        for i, pct in enumerate((25, 50, 75), start=1):
            q[f"{key}_q{i}"] = float(np.nanpercentile(v, pct)) if np.isfinite(v).any() else float("nan")
    return {
        "l2_errors": [float(v) for v in l2],
        "r2_scores": [float(v) for v in r2],
        "pearson_corrs": [{"name": g, "pearson_corr": float(v)} for g, v in zip(genes, r, strict=True)],
        "pearson_mean": _mean(r),
        "pearson_std": _std(r),
        **q,
    }


def write_split(folder: Path, results: dict, n_train: int, n_test: int, config: dict, dump: dict) -> None:
    """A split's ``results.json``, ``summary.json``, ``config.json`` and ``inference_dump.npz``."""
    write_hest_json(folder / "results.json", results)
    write_hest_json(folder / "summary.json", {"n_train": int(n_train), "n_test": int(n_test)} | results)
    write_hest_json(folder / "config.json", config)
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v, dtype=str if np.asarray(v).dtype == object else None) for k, v in dump.items()})
    with atomic_path(folder / "inference_dump.npz") as tmp:
        tmp.write_bytes(buf.getvalue())


def merge_splits(per_split: list[dict]) -> dict:
    """HEST's ``results_kfold.json`` of one task and encoder from its splits' results (genes best first)."""
    by_gene: dict[str, list[float]] = {}
    for res in per_split:
        for g in res["pearson_corrs"]:
            by_gene.setdefault(g["name"], []).append(g["pearson_corr"])
    genes = [{"name": g, "pearson_corrs": v, "mean": _mean(v), "std": _std(v)} for g, v in by_gene.items()]
    genes.sort(key=lambda g: -g["mean"] if np.isfinite(g["mean"]) else np.inf)  # stable; NaN last
    means = [res["pearson_mean"] for res in per_split]
    return {"pearson_corrs": genes, "pearson_mean": _mean(means), "pearson_std": _std(means), "mean_per_split": means}


def write_task(folder: Path, per_split: list[dict]) -> dict:
    """Write ``results_kfold.json`` of one task and encoder; returns it with ``mean``/``std`` for the tables."""
    merged = merge_splits(per_split)
    write_hest_json(folder / "results_kfold.json", merged)
    return merged | {"mean": merged["pearson_mean"], "std": merged["pearson_std"]}


def write_dataset(out: Path, task_results: dict[str, dict[str, dict]]) -> dict[str, float]:
    """Each task's ``enc_results.json``, then ``dataset_results.json`` and ``.csv``; returns ``average``
    (encoder -> mean over tasks of the task's ``pearson_mean``, best first).

    ``task_results``: task -> encoder -> :func:`write_task`'s result.
    """
    datasets, rows, per_enc = [], [], {}
    for task, encs in task_results.items():
        entries = [
            {"encoder_name": e, "pearson_mean": r["pearson_mean"], "pearson_std": r["pearson_std"]}
            for e, r in encs.items()
        ]
        entries.sort(key=lambda d: -d["pearson_mean"] if np.isfinite(d["pearson_mean"]) else np.inf)
        write_hest_json(Path(out) / task / "enc_results.json", {"results": entries})
        datasets.append({"dataset_name": task, "results": entries})
        row = {"dataset": task}
        for d in entries:
            row[f"{d['encoder_name']}_mean"], row[f"{d['encoder_name']}_std"] = d["pearson_mean"], d["pearson_std"]
            per_enc.setdefault(d["encoder_name"], []).append(d["pearson_mean"])
        rows.append(row)
    atomic_write_text(Path(out) / "dataset_results.csv", pd.DataFrame(rows).to_csv())
    average = dict(sorted(((e, float(np.mean(v))) for e, v in per_enc.items()), key=lambda kv: -kv[1]))
    write_hest_json(Path(out) / "dataset_results.json", {"results": datasets, "average": average})
    return average
