"""``spade-st evaluate TASK.yaml``: run every embedding source of a task manifest on the same splits.

Manifest (YAML; paths relative to the manifest's folder)::

    name: my-task
    type: patch_classification | slide_classification | survival | gene_expression
    labels: labels.csv      # patch: sample, barcode, label; slide: slide, label, patient;
                            # survival: slide, time, event, patient (not used by gene_expression)
    sources:                # name -> folder of per-sample/per-slide h5 (features or embeddings)
      raw: feats/efficientnet_lite0
      spade: emb/
    ks: [1, 2, 4, 8, 16, 32]   # shots per class (patch) or slides per class (slide few-shot)
    seeds: 20
    folds: 5
    test_fraction: 0.3      # slide tasks: patient-disjoint held-out test set
    # gene_expression only:
    data: hest_root/        # HEST-layout root: st/<id>.h5ad with raw counts, the sample table with patients
    samples: [SPA119, ...]  # default: every sample of the root
    protocol: leave_one_patient_out   # or within_patient
    targets: [log1p, cp10k] # log1p of raw counts (HEST-Benchmark's) and/or log1p CP10k
    probes: [hest_ridge, ridge_cv]
    n_genes: 50             # most variable genes of each fold's training samples
    # slide tasks on a Patho-Bench split (instead of labels: and our own CV; see :mod:`.patho_bench_run`):
    split: {patho_bench: k=all.tsv, config: config.yaml}   # from HF MahmoodLab/Patho-Bench <source>/<task>/
    shots: 8                # optional: Patho-Bench's few-shot draw (seed 42) of N training samples per class

With ``split:``, every fold of the file is one test split (``fold`` = ``fold_<k>`` in the tables), samples are
matched to ``<slide_id>.h5`` of each source, and Patho-Bench's ``test_metrics_summary.json`` is written per source
and probe under ``patho_bench/``. Paths may use environment variables (``${HEST_ROOT}/st``); one that is not set is an error. Rows of every
source are matched to spots by barcode; only spots present in every source are evaluated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._atomic import atomic_write_text
from .._validation import SpadeInputError, read_yaml_mapping
from ._names import PROBES, PROTOCOLS, SUMMARY_KEYS, TARGETS
from .stats import long_table, summarise, to_markdown

TYPES = ("patch_classification", "slide_classification", "survival", "gene_expression")


@dataclass
class Task:
    name: str
    type: str
    sources: dict[str, Path]
    labels: Path | None = None
    ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    seeds: int = 20
    folds: int = 5
    test_fraction: float = 0.3
    epochs: int = 20
    data: Path | None = None
    samples: list[str] | None = None
    protocol: str = "leave_one_patient_out"
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    probes: list[str] = field(default_factory=lambda: list(PROBES))
    n_genes: int = 50
    split: dict | None = None
    shots: int | None = None


def _path(base: Path, value, where: str) -> Path:
    text = os.path.expandvars(str(value))
    if "$" in text:
        msg = f"{where}: {value!r} uses an environment variable that is not set; export it or write the path"
        raise SpadeInputError(msg)
    return base / text


def load_task(path: Path | str) -> Task:
    p = Path(path)
    raw = read_yaml_mapping(p, "task manifest")
    if raw.get("type") not in TYPES:
        msg = f"{p}: type {raw.get('type')!r} is not one of {TYPES}"
        raise SpadeInputError(msg)
    need = ("name", "type", "data" if raw["type"] == "gene_expression" else "labels", "sources")
    if "split" in raw:
        need = ("name", "type", "split", "sources")
        _check_split(p, raw)
    missing = [k for k in need if k not in raw]
    if missing:
        msg = f"{p} lacks {missing}; a {raw['type']} task needs {', '.join(need)}"
        raise SpadeInputError(msg)
    unknown = sorted(set(raw) - set(Task.__dataclass_fields__))
    if unknown:
        msg = f"{p}: unknown key(s) {unknown}"
        raise SpadeInputError(msg)
    checks = [
        ("protocol", [raw.get("protocol", "leave_one_patient_out")], PROTOCOLS),
        ("targets", raw.get("targets", []), TARGETS),
        ("probes", raw.get("probes", []), PROBES),
    ]
    for key, values, allowed in checks:
        bad = [v for v in values if v not in allowed]
        if bad:
            msg = f"{p}: {key} {bad} not among {list(allowed)}"
            raise SpadeInputError(msg)
    base = p.parent
    for key in ("labels", "data"):
        if key in raw:
            raw[key] = _path(base, raw[key], f"{p}: {key}")
    if "split" in raw:
        raw["split"] = {k: _path(base, v, f"{p}: split {k}") for k, v in raw["split"].items()}
    raw["sources"] = {k: _path(base, v, f"{p}: source {k}") for k, v in raw["sources"].items()}
    for name, folder in raw["sources"].items():
        if not Path(folder).is_dir():
            msg = f"{p}: source {name!r} folder {folder} does not exist"
            raise FileNotFoundError(msg)
    return Task(**raw)


def _check_split(p: Path, raw: dict) -> None:
    """``split: {patho_bench: TSV, config: YAML}`` on a slide task, ``shots`` an int of at least 2."""
    sp = raw["split"]
    if raw["type"] not in ("slide_classification", "survival") or "labels" in raw:
        msg = f"{p}: split: is for slide_classification / survival tasks and replaces labels:; drop one"
        raise SpadeInputError(msg)
    if not isinstance(sp, dict) or set(sp) != {"patho_bench", "config"}:
        msg = f"{p}: write split: {{patho_bench: PATH/k=all.tsv, config: PATH/config.yaml}}"
        raise SpadeInputError(msg)
    shots = raw.get("shots")
    if shots is not None and (raw["type"] == "survival" or not isinstance(shots, int) or shots < 2):
        msg = f"{p}: shots: {shots!r}: give an int >= 2 (per class; the probes' inner CV needs 2) on a classification task"
        raise SpadeInputError(msg)


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
    from ..io.features import read_features
    from .fewshot import few_shot, result_rows

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
        res = few_shot(
            np.concatenate(xs),
            np.concatenate(ys),
            ks=task.ks,
            seeds=task.seeds,
            progress=True,
            desc=f"few-shot ({name})",
        )
        rows.append(result_rows(res, source=name, task=task.name))
    return long_table(pd.concat(rows, ignore_index=True))


def _bags(folder: Path, slides) -> list[np.ndarray]:
    from ..io.features import read_features

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
            split = {"source": name, "fold": f"rep{rep}"}  # the repeated patient-level test split
            test = _patient_split(patients, strat, task.test_fraction, rep)
            train = np.setdiff1d(np.arange(len(bags)), test)
            if task.type == "slide_classification":
                p, _ = abmil_cv(bags, y, test, MILConfig(epochs=task.epochs, folds=task.folds, seed=rep))
                for m, v in classification_metrics(y[test], p).items():
                    rows.append(split | {"probe": "abmil", "metric": m, "k": "all", "value": v})
                p = mean_pool_probe(bags, y, test, seed=rep)
                for m, v in classification_metrics(y[test], p).items():
                    rows.append(split | {"probe": "linear", "metric": m, "k": "all", "value": v})
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
                        rows.append(split | {"probe": "linear", "metric": m, "k": k, "value": v})
            else:
                times, events = lab["time"].to_numpy(float), lab["event"].to_numpy(int)
                model = train_survival_abmil(bags, times, events, train, epochs=task.epochs, seed=rep)
                risks = {
                    "abmil_nll": predict_risk(model, [bags[i] for i in test]),
                    "cox_mean": cox_mean_pool(bags, times, events, train, test),
                }
                for probe, risk in risks.items():
                    value = c_index(times[test], events[test], risk)
                    rows.append(split | {"probe": probe, "metric": "c_index", "k": "all", "value": value})
    return long_table(pd.DataFrame(rows).assign(task=task.name))


def _run_genes(task: Task) -> pd.DataFrame:
    """Gene-expression prediction from every source under one fold protocol (see :mod:`.gene_folds`)."""
    from ..io import read_hest
    from ..io.features import read_features
    from .gene_folds import fold_genes, make_folds, rows_in_order, score_fold, section
    from .genes import match_barcodes

    samples = read_hest(task.data, ids=task.samples)
    sections, x = {}, {name: {} for name in task.sources}
    for s in samples:
        sets = {name: read_features(Path(folder) / f"{s.id}.h5") for name, folder in task.sources.items()}
        what = {name: f"source {name} ({Path(folder) / f'{s.id}.h5'})" for name, folder in task.sources.items()}
        common = pd.Index(s.adata.obs_names.astype(str))
        for name, fs in sets.items():
            match_barcodes(fs.barcode, s.adata.obs_names, what[name])  # no barcodes, duplicates, foreign spots
            common = common[common.isin(fs.barcode.astype(str))]
        sections[s.id] = section(s, np.asarray(common), task.targets)
        for name, fs in sets.items():
            x[name][s.id] = rows_in_order(fs, common, what[name])
    folds = make_folds({sid: sec.patient for sid, sec in sections.items()}, task.protocol)
    if not folds:
        msg = f"task {task.name}: protocol {task.protocol} has no fold on these samples (too few patients/sections)"
        raise SpadeInputError(msg)
    rows = []
    for fold in folds:
        genes = fold_genes(fold, sections, task.n_genes)
        for name in task.sources:
            for target in task.targets:
                for probe in task.probes:
                    v = score_fold(fold, sections, x[name], genes, target, probe)
                    rows.append(
                        {"source": name, "probe": probe, "target": target, "metric": "mean_pearson"}
                        | {"fold": fold.name, "value": v}
                    )
    return long_table(pd.DataFrame(rows).assign(task=task.name))


def _leakage(task: Task, allow: bool, split=None) -> dict[str, dict[str, str]]:
    """The leakage guard (:mod:`.leakage`) on the samples this task scores, before any work."""
    from ..io.layout import read_metadata
    from .leakage import check_no_overlap, source_model

    table = None  # patients compared for leave-one-patient-out and the table's own patient column
    if task.type == "gene_expression":
        table = read_metadata(task.data)
        scored = task.samples or [str(i) for i in table.index]
    elif task.split:
        scored = [s for slides in split.slides for s in slides]
    else:
        col = "sample" if task.type == "patch_classification" else "slide"
        scored = pd.read_csv(task.labels, dtype={col: str})[col].astype(str).unique().tolist()
    models = {name: source_model(folder) for name, folder in task.sources.items()}
    if task.protocol == "within_patient":  # the probes train on the patient's other sections by design
        table = None
    return check_no_overlap(models, scored, table, allow)


def run_task(path: Path | str, out: Path | str, allow_train_overlap: bool = False) -> pd.DataFrame:
    """Run the manifest; write ``results.csv`` (summary), ``results_long.csv`` and ``results.md`` into ``out``.

    A source whose model trained on a scored sample (or its patient) is refused before any work, unless
    ``allow_train_overlap``; then the summary's ``in_sample`` column and ``results.md`` say which sources."""
    task = load_task(path)
    split = None
    if task.split:
        from .patho_bench_run import load_split, run_split

        split = load_split(task)  # the split's checks and its feature files, before any work
    leaks = _leakage(task, allow_train_overlap, split)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runners = {"patch_classification": _run_patch, "gene_expression": _run_genes}
    if split is not None:
        long = run_split(task, split, out)
    else:
        long = runners.get(task.type, _run_slides)(task)
    summary = summarise(long, SUMMARY_KEYS)
    note = ""
    if leaks:
        summary["in_sample"] = summary["source"].isin(list(leaks))
        note = "".join(
            f"**In-sample**: source `{name}`'s model trained on {', '.join(sorted(hit))} (scored anyway).\n\n"
            for name, hit in leaks.items()
        )
    atomic_write_text(out / "results_long.csv", long.to_csv(index=False))
    atomic_write_text(out / "results.csv", summary.to_csv(index=False))
    atomic_write_text(out / "results.md", f"# {task.name}\n\n" + note + to_markdown(summary) + "\n")
    return summary
