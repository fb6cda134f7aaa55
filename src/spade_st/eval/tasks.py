"""``spade-st evaluate TASK.yaml``: run every embedding source of a task manifest on the same splits.

Manifest (YAML; paths relative to the manifest's folder)::

    name: my-task
    type: patch_classification | slide_classification | survival
    labels: labels.csv      # patch: sample, barcode, label; slide: slide, label, patient;
                            # survival: slide, time, event, patient
    sources:                # name -> folder of per-sample/per-slide h5 (features or embeddings)
      raw: feats/efficientnet_lite0
      spade: emb/
    ks: [1, 2, 4, 8, 16, 32]   # shots per class (patch) or slides per class (slide few-shot)
    seeds: 20
    folds: 5
    test_fraction: 0.3      # slide tasks: patient-disjoint held-out test set
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._atomic import atomic_write_text
from .._validation import SpadeInputError, read_yaml_mapping
from .stats import summarise, to_markdown

TYPES = ("patch_classification", "slide_classification", "survival")


@dataclass
class Task:
    name: str
    type: str
    labels: Path
    sources: dict[str, Path]
    ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    seeds: int = 20
    folds: int = 5
    test_fraction: float = 0.3
    epochs: int = 20


def load_task(path: Path | str) -> Task:
    p = Path(path)
    raw = read_yaml_mapping(p, "task manifest")
    missing = [k for k in ("name", "type", "labels", "sources") if k not in raw]
    if missing:
        msg = f"{p} lacks {missing}; a task needs name, type, labels and sources"
        raise SpadeInputError(msg)
    if raw["type"] not in TYPES:
        msg = f"{p}: type {raw['type']!r} is not one of {TYPES}"
        raise SpadeInputError(msg)
    unknown = sorted(set(raw) - set(Task.__dataclass_fields__))
    if unknown:
        msg = f"{p}: unknown key(s) {unknown}"
        raise SpadeInputError(msg)
    base = p.parent
    raw["labels"] = base / raw["labels"]
    raw["sources"] = {k: base / v for k, v in raw["sources"].items()}
    for name, folder in raw["sources"].items():
        if not Path(folder).is_dir():
            msg = f"{p}: source {name!r} folder {folder} does not exist"
            raise FileNotFoundError(msg)
    return Task(**raw)


def _patient_split(patients: np.ndarray, y: np.ndarray, frac: float, seed: int) -> np.ndarray:
    """Indices of a patient-disjoint test set, about ``frac`` of slides, with every class in it if possible."""
    rng = np.random.default_rng(seed)
    uniq = rng.permutation(np.unique(patients))
    test_p, n = [], 0
    for p in uniq:
        if n >= frac * len(patients):
            break
        test_p.append(p)
        n += int((patients == p).sum())
    return np.flatnonzero(np.isin(patients, test_p))


def _run_patch(task: Task) -> pd.DataFrame:
    from ..encoders.features import read_features
    from .fewshot import few_shot

    lab = pd.read_csv(task.labels, dtype={"sample": str, "barcode": str})
    rows = []
    for name, folder in task.sources.items():
        xs, ys = [], []
        for sid, g in lab.groupby("sample", sort=True):
            fs = read_features(Path(folder) / f"{sid}.h5")
            pos = pd.Index(fs.barcode.astype(str)).get_indexer(g["barcode"].astype(str))
            if (pos < 0).any():
                msg = f"source {name}: {int((pos < 0).sum())} labelled barcodes of {sid} have no embedding"
                raise SpadeInputError(msg)
            xs.append(fs.features[pos])
            ys.append(g["label"].to_numpy(dtype=object))
        res = few_shot(np.concatenate(xs), np.concatenate(ys), ks=task.ks, seeds=task.seeds)
        rows.append(res.assign(source=name, task=task.name))
    out = pd.concat(rows, ignore_index=True)
    out["probe_metric"] = out["probe"] + ":" + out["metric"]
    return out.rename(columns={"seed": "rep"})[["task", "source", "probe_metric", "k", "rep", "value"]]


def _bags(folder: Path, slides) -> list[np.ndarray]:
    from ..encoders.features import read_features

    return [read_features(Path(folder) / f"{s}.h5").features.astype(np.float32) for s in slides]


def _run_slides(task: Task) -> pd.DataFrame:
    from .mil import MILConfig, abmil_cv, classification_metrics, mean_pool_probe
    from .survival import c_index, cox_mean_pool, predict_risk, train_survival_abmil

    lab = pd.read_csv(task.labels, dtype={"slide": str, "patient": str})
    patients = lab["patient"].to_numpy() if "patient" in lab else lab["slide"].to_numpy()
    rows = []
    if task.type == "slide_classification":
        classes = sorted(lab["label"].astype(str).unique())
        y = lab["label"].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy()
    for name, folder in task.sources.items():
        bags = _bags(folder, lab["slide"])
        for rep in range(task.seeds if task.type != "slide_classification" else min(task.seeds, 5)):
            strat = y if task.type == "slide_classification" else lab["event"].to_numpy()
            test = _patient_split(patients, strat, task.test_fraction, rep)
            train = np.setdiff1d(np.arange(len(bags)), test)
            if task.type == "slide_classification":
                p, _ = abmil_cv(bags, y, test, MILConfig(epochs=task.epochs, folds=task.folds, seed=rep))
                for m, v in classification_metrics(y[test], p).items():
                    rows.append({"source": name, "probe_metric": f"abmil:{m}", "k": "all", "rep": rep, "value": v})
                p = mean_pool_probe(bags, y, test, seed=rep)
                for m, v in classification_metrics(y[test], p).items():
                    rows.append({"source": name, "probe_metric": f"linear:{m}", "k": "all", "rep": rep, "value": v})
                for k in task.ks:  # few-shot: k development slides per class
                    rng = np.random.default_rng([rep, k])
                    shots = np.concatenate(
                        [
                            rng.choice(train[y[train] == c], size=min(k, int((y[train] == c).sum())), replace=False)
                            for c in range(len(classes))
                        ]
                    )
                    keep = np.concatenate([shots, test])
                    sub_test = np.arange(len(shots), len(keep))
                    p = mean_pool_probe([bags[i] for i in keep], y[keep], sub_test, seed=rep)
                    for m, v in classification_metrics(y[test], p).items():
                        rows.append({"source": name, "probe_metric": f"linear:{m}", "k": k, "rep": rep, "value": v})
            else:
                times, events = lab["time"].to_numpy(float), lab["event"].to_numpy(int)
                model = train_survival_abmil(bags, times, events, train, epochs=task.epochs, seed=rep)
                rows.append(
                    {
                        "source": name,
                        "probe_metric": "abmil_nll:c_index",
                        "k": "all",
                        "rep": rep,
                        "value": c_index(times[test], events[test], predict_risk(model, [bags[i] for i in test])),
                    }
                )
                rows.append(
                    {
                        "source": name,
                        "probe_metric": "cox_mean:c_index",
                        "k": "all",
                        "rep": rep,
                        "value": c_index(times[test], events[test], cox_mean_pool(bags, times, events, train, test)),
                    }
                )
    return pd.DataFrame(rows).assign(task=task.name)[["task", "source", "probe_metric", "k", "rep", "value"]]


def run_task(path: Path | str, out: Path | str) -> pd.DataFrame:
    """Run the manifest; write ``results.csv`` (summary), ``results_long.csv`` and ``results.md`` into ``out``."""
    task = load_task(path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    long = _run_patch(task) if task.type == "patch_classification" else _run_slides(task)
    long["k"] = long["k"].astype(str)
    summary = summarise(long, ["task", "probe_metric", "k", "source"])
    atomic_write_text(out / "results_long.csv", long.to_csv(index=False))
    atomic_write_text(out / "results.csv", summary.to_csv(index=False))
    atomic_write_text(out / "results.md", f"# {task.name}\n\n" + to_markdown(summary) + "\n")
    return summary
