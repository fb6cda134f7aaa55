"""``spade-st demo``: the whole pipeline on the built-in synthetic dataset, ending with a report.

demo-data -> ``spade-st run --until embed`` (extract with efficientnet_lite0's real ImageNet weights, pretrain
with configs/demo.yaml, embed) -> gene-prediction check and few-shot (raw features vs SPADE) -> report. Every
stage reuses finished outputs.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from ._atomic import atomic_write_text
from .io.runs import ModelLayout, RunLayout
from .train.splits import held_out


@dataclass
class DemoConfig:
    """Options of ``spade-st demo``."""

    out: Path
    samples: int = 8
    spots: int = 200
    seed: int = 0
    encoder: str = "efficientnet_lite0"
    epochs: int | None = None


def _stage(log: list[str], name: str, fn, run: Path | None = None):
    """Run ``fn`` as stage ``name``: its time into ``log``, its warnings into ``run/warnings.json`` (the report's)."""
    from ._warnlog import record_warnings

    t = time.perf_counter()
    with record_warnings(run, name):
        res = fn()
    log.append(f"{name}: {time.perf_counter() - t:.1f} s")
    print(f"[demo] {name} done ({time.perf_counter() - t:.1f} s)", flush=True)
    return res


def run_demo(cfg: DemoConfig) -> Path:
    """Run every stage on synthetic data under ``cfg.out``; return the report path."""
    from .datasets import SyntheticConfig, synthetic
    from .io import read_hest
    from .run import RunConfig, run_pipeline

    out = Path(cfg.out)
    run = RunLayout(out)
    data, feats, model, emb = run.data, run.features(), run.model, run.embeddings
    log: list[str] = []

    def make_data():
        try:
            if len(read_hest(data)) == cfg.samples:
                return
        except (FileNotFoundError, ValueError):
            pass
        synthetic(SyntheticConfig(out=data, samples=cfg.samples, spots=cfg.spots, seed=cfg.seed, overwrite=True))

    _stage(log, "demo-data", make_data, out)
    samples = read_hest(data)  # the last patient's samples are held out of pretraining: evaluated on
    held = [s.id for s in samples if s.patient == samples[-1].patient]
    rcfg = RunConfig(
        "demo", data, out, exclude=held, until="embed", overrides={"encoder": cfg.encoder, "epochs": cfg.epochs}
    )
    _stage(log, "extract, pretrain, embed (spade-st run)", lambda: run_pipeline(rcfg))  # it records its warnings
    table = _stage(log, "gene prediction", lambda: _gene_check(data, feats / cfg.encoder, emb, model), out)
    _stage(log, "few-shot", lambda: _fewshot(data, feats / cfg.encoder, emb, model, run.results), out)
    _stage(log, "clustering k scan", lambda: _choose_k(model), out)
    from ._atomic import atomic_write_text
    from .pl.report import write_report

    run.results.mkdir(exist_ok=True)
    from .eval.stats import long_table

    genes = long_table(
        [
            {"task": "genes", "source": n, "probe": "ridge_cv", "target": "panel", "metric": "mean_pearson", "value": v}
            for n, v in table
        ]
    )
    atomic_write_text(run.results / "gene_prediction.csv", genes.to_csv(index=False))
    write_steps(out, log, table)
    return _stage(log, "report", lambda: write_report(out), out)


def _fewshot(data: Path, feats: Path, emb: Path, model: Path, out: Path) -> None:
    """Few-shot region classification on the held-out samples: raw features vs SPADE embeddings."""
    import json

    import pandas as pd

    from ._atomic import atomic_write_text
    from .eval._names import SUMMARY_KEYS
    from .eval.fewshot import few_shot, result_rows
    from .eval.gene_folds import load_section
    from .eval.stats import long_table, summarise
    from .io import read_hest

    ids = held_out(json.loads(ModelLayout(model).split.read_text()))
    by = {s.id: s for s in read_hest(data, ids=ids)}
    rows = []
    for name, src in (("raw", feats), ("spade", emb)):
        secs = [load_section(by[i], src / f"{i}.h5", targets=()) for i in ids]  # rows matched by barcode
        x = np.concatenate([sec.features for sec in secs])
        y = np.concatenate([sec.adata.obs["label"].astype(str).to_numpy() for sec in secs])
        res = few_shot(x, y, ks=(1, 2, 4, 8, 16), seeds=5, progress=True, desc=f"few-shot ({name})")
        rows.append(result_rows(res, source=name, task="fewshot"))
    summary = summarise(long_table(pd.concat(rows)), SUMMARY_KEYS)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "fewshot.csv", summary.to_csv(index=False))


def _choose_k(model: Path) -> None:
    from ._atomic import atomic_write_text
    from .experts import choose_k
    from .train.store import open_store

    store = open_store(ModelLayout(model).store)
    rows = np.random.default_rng(0).permutation(len(store))[:3000]
    df = choose_k(np.asarray(store.features[np.sort(rows)], np.float32), ks=(2, 4, 8, 16, 32))
    atomic_write_text(ModelLayout(model).choose_k, df.to_csv(index=False))


def _gene_check(data: Path, feats: Path, emb: Path, model: Path) -> list[tuple[str, float]]:
    """Ridge (penalty by leave-one-sample-out CV) from raw features vs SPADE embeddings to the held-out samples'
    panel expression: mean Pearson r over the panel genes."""
    import json

    from .eval.gene_folds import load_section
    from .genes import GenePanel
    from .genes.ridge import mean_pearson, ridge_cv
    from .io import read_hest

    split = json.loads(ModelLayout(model).split.read_text())
    panel = GenePanel.from_json(ModelLayout(model).panel)
    by = {s.id: s for s in read_hest(data)}
    rows = []
    for name, src in (("raw features", feats), ("SPADE", emb)):

        def load(ids, src=src):
            secs = [load_section(by[i], src / f"{i}.h5", targets=()) for i in ids]  # rows matched by barcode
            return (
                np.concatenate([s.features for s in secs]),
                np.concatenate([panel.transform(s.adata) for s in secs]),
                np.concatenate([[i] * len(s.features) for i, s in zip(ids, secs, strict=True)]),
            )

        if not held_out(split):
            continue
        xt, yt, groups = load(split["train"])
        xv, yv, _ = load(held_out(split))
        rows.append((name, mean_pearson(ridge_cv(xt, yt, xv, groups)[0], yv)))
    return rows


def write_steps(out: Path, log: list[str], table: list[tuple[str, float]]) -> Path:
    from .io import read_hest

    samples = read_hest(out / "data")
    lines = [
        "# spade-st demo report",
        "",
        f"spade-st {__version__}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "",
        "## Steps",
        *[f"- {line}" for line in log],
        "",
        "## Samples",
        "",
        "| id | organ | patient | spots | genes |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {s.id} | {s.organ} | {s.patient} | {s.adata.n_obs} | {s.adata.n_vars} |" for s in samples],
        "",
        "## Gene prediction on the held-out samples (ridge, mean Pearson over panel genes)",
        "",
        "| embedding | mean Pearson |",
        "| --- | --- |",
        *[f"| {n} | {v:.3f} |" for n, v in table],
        "",
    ]
    report = out / "steps.md"
    atomic_write_text(report, "\n".join(lines))
    return report
