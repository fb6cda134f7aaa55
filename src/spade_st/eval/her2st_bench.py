"""``spade-st bench her2st``: raw encoder features vs SPADE (and its controls) on real her2st sections.

Leakage-free by construction: every SPADE model used on a fold was pretrained without the fold's test sections
(``--exclude``), and the few-shot section's model without that section. Per fold, source and pretraining seed:

1. gene expression under both protocols of :mod:`.gene_folds` (within-patient leave-one-section-out;
   leave-one-patient-out), both targets (``log1p`` raw counts, HEST-Benchmark's; ``cp10k``) and both probes
   (the HEST ridge; a ridge with alpha by inner group CV on the training sections), plus SPADE's kNN route in
   its latent space. By default A1 (a 6x upsampled 2000 px image) is left out of gene regression;
2. cross-modal retrieval (Recall@1/5/10 both ways) on each held-out section, SPADE sources;
3. few-shot classification of the label section's pathologist regions (classes with k + 1 spots at each k).

Sources: ``raw`` features; ``spade`` (the config's experts); ``single_expert`` (E = 1); ``one_epoch`` (the same
model after one epoch: if it scores like the trained one, training added nothing the probe can see); ``raw+spade``
(the two concatenated). Intervals are over folds x pretraining seeds (x few-shot draws).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._atomic import atomic_write_text
from .._progress import progress as tqdm
from .._validation import DataWarning, SpadeInputError
from ._names import PROBES, PROTOCOLS, TARGETS, VARIANTS
from .fewshot import DEFAULT_K, few_shot, result_rows
from .gene_folds import Section, fold_genes, load_section, make_folds, score_fold
from .genes import knn_expression, mean_pearson
from .retrieval import cross_modal
from .stats import long_table, summarise, to_markdown

KEYS = ["task", "protocol", "target", "probe", "metric", "k", "source"]


@dataclass
class Her2stBenchConfig:
    """Options of ``spade-st bench her2st``."""

    data: Path
    features: Path
    out: Path
    config: str = "her2st"
    epochs: int | None = None
    pretrain_seeds: int = 3  #: models per variant and fold (seeds config.seed, config.seed + 1, ...)
    seeds: int = 10  #: few-shot draws per model
    ks: tuple[int, ...] = DEFAULT_K
    n_genes: int = 50
    targets: tuple[str, ...] = TARGETS
    probes: tuple[str, ...] = PROBES
    protocols: tuple[str, ...] = PROTOCOLS
    variants: tuple[str, ...] = tuple(VARIANTS)
    gene_exclude: list[str] = field(default_factory=lambda: ["A1"])  #: sections kept out of gene regression
    label_section: str = "A1"
    sections: list[str] = field(default_factory=list)  #: default: every sample of the root
    overrides: dict = field(default_factory=dict)  #: pretraining options set on top of ``config`` (ablations)
    progress: bool = True


def _model(cfg: Her2stBenchConfig, variant: str, seed_index: int, excluded: list[str]):
    from ..experts.model import SpadeModel
    from ..train.config import load_config
    from ..train.pretrain import pretrain
    from .leakage import check_no_overlap

    out = Path(cfg.out) / "models" / variant / f"seed{seed_index}" / "+".join(sorted(excluded))
    pc = load_config(cfg.config, data=cfg.data, features=cfg.features, out=out, exclude=sorted(excluded))
    pc.set(seed=pc.seed + seed_index, epochs=cfg.epochs or pc.optim.epochs)
    try:
        pc.set(**(cfg.overrides | VARIANTS[variant])).validate()
    except SpadeInputError as err:
        raise SpadeInputError(f"bench overrides: {err}") from None
    pc.progress = False
    pc.predictor = False  # the bench measures the embedding with its own probes
    with warnings.catch_warnings():  # one-section experts are measured by the islands rows, not said per model
        warnings.simplefilter("ignore", DataWarning)
        pretrain(pc)  # a finished folder is reused (same bytes); one trained with other settings is refused
    check_no_overlap({variant: out}, list(excluded))  # the sections a fold scores never trained its model
    return SpadeModel.from_pretrained(out)


class _Embeddings:
    """Embeddings of every section under one model (computed once)."""

    def __init__(self, model, sections: dict[str, Section]):
        self.model, self.sections, self._img, self._latent, self._gene = model, sections, {}, {}, {}

    def img(self, sid: str) -> np.ndarray:
        """The model's output (what a downstream probe gets)."""
        if sid not in self._img:
            self._img[sid] = self.model.embed(self.sections[sid].features)
        return self._img[sid]

    def latent(self, sid: str) -> np.ndarray:
        """Image embeddings in the space shared with :meth:`gene` (kNN route, retrieval)."""
        if self.model.config.output != "concat":
            return self.img(sid)
        if sid not in self._latent:
            self._latent[sid] = self.model.embed(self.sections[sid].features, latent=True)
        return self._latent[sid]

    def gene(self, sid: str) -> np.ndarray:
        """Gene-side embeddings of the section's spots (their expression through the model's gene heads)."""
        if sid not in self._gene:
            s = self.sections[sid]
            self._gene[sid] = self.model.embed_genes(self.model.gene_panel().transform(s.adata), features=s.features)
        return self._gene[sid]


def run_her2st_bench(cfg: Her2stBenchConfig) -> pd.DataFrame:
    """Run the benchmark; writes ``results_long.csv``, ``results.csv``, ``results_by_fold.csv`` and
    ``results.md`` under ``cfg.out`` and returns the summary."""
    from ..io import read_hest

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    samples = {s.id: s for s in read_hest(cfg.data)}
    ids = cfg.sections or sorted(samples)
    sections = {sid: load_section(samples[sid], Path(cfg.features) / f"{sid}.h5", cfg.targets) for sid in ids}
    gene_ids = {sid: sections[sid].patient for sid in ids if sid not in set(cfg.gene_exclude)}
    folds = [f for p in cfg.protocols for f in make_folds(gene_ids, p)]
    fewshot = cfg.label_section in sections and "label" in sections[cfg.label_section].adata.obs
    exclusions = sorted({tuple(sorted(f.test)) for f in folds} | ({(cfg.label_section,)} if fewshot else set()))
    jobs = [(v, i, ex) for v in cfg.variants for i in range(cfg.pretrain_seeds) for ex in exclusions]
    models = {}
    for v, i, ex in tqdm(jobs, desc="bench: pretrain", unit="model", disable=not cfg.progress, file=sys.stderr):
        models[v, i, ex] = _Embeddings(_model(cfg, v, i, list(ex)), sections)
    rows = []
    for fold in tqdm(folds, desc="bench: gene folds", unit="fold", disable=not cfg.progress, file=sys.stderr):
        fold_models = {(v, i): emb for (v, i, e), emb in models.items() if e == tuple(sorted(fold.test))}
        rows += _fold_rows(cfg, fold, sections, fold_models)
    if fewshot:
        rows += _fewshot_rows(cfg, sections[cfg.label_section], models)
        rows += _island_rows(sections, {k: m for k, m in models.items() if k[2] == (cfg.label_section,)})
    return write_results(out, pd.DataFrame(rows))


def _island_rows(sections: dict[str, Section], models: dict) -> list[dict]:
    """Expert islands (:mod:`.islands`) of each model's output on every section, and of the raw features with
    the same model's routing (argmax expert)."""
    from .islands import expert_islands

    ids = sorted(sections)
    raw = np.concatenate([sections[s].features for s in ids])
    base = {"task": "islands", "protocol": "all sections", "target": "", "probe": "", "k": "", "fold": ""}
    rows = []
    for (v, i, _), emb in models.items():
        if emb.model.config.n_experts < 2:
            continue
        experts = emb.model.route(raw).argmax(1)
        for name, z in ((v, np.concatenate([emb.img(s) for s in ids])), (f"raw ({v} experts)", raw)):
            for metric, val in expert_islands(z, experts).items():
                rows.append(base | {"metric": metric, "source": name, "seed": i, "value": val})
    return rows


def _sources(raw: dict, models: dict, ids) -> list[tuple[str, object, dict]]:
    """(source, pretraining seed, {section: rows}) for raw features, each model, and raw || SPADE."""
    out = [("raw", "", {s: raw[s] for s in ids})]
    for (v, i), emb in models.items():
        out.append((v, i, {s: emb.img(s) for s in ids}))
        if v == "spade":
            out.append(("raw+spade", i, {s: np.hstack([raw[s], emb.img(s)]) for s in ids}))
    return out


def _fold_rows(cfg: Her2stBenchConfig, fold, sections: dict[str, Section], models: dict) -> list[dict]:
    """Gene rows (every source, target and probe; SPADE's latent kNN) and retrieval rows of one fold."""
    genes = fold_genes(fold, sections, cfg.n_genes)
    raw = {sid: s.features for sid, s in sections.items()}
    base = {"task": "genes", "protocol": fold.protocol, "metric": "mean_pearson", "k": "", "fold": fold.name}
    rows = []
    for target in cfg.targets:
        y = {s: sections[s].targets[target][genes].to_numpy() for s in fold.train + fold.test}
        for name, seed, x in _sources(raw, models, fold.train + fold.test):
            for probe in cfg.probes:
                v = score_fold(fold, sections, x, genes, target, probe)
                rows.append(base | {"target": target, "probe": probe, "source": name, "seed": seed, "value": v})
        for (name, seed), emb in models.items():  # SPADE's own route: kNN over the training spots' gene embeddings
            keys = np.concatenate([emb.gene(s) for s in fold.train])
            ytr = np.concatenate([y[s] for s in fold.train])
            v = np.mean([mean_pearson(knn_expression(emb.latent(s), keys, ytr), y[s]) for s in fold.test])
            rows.append(base | {"target": target, "probe": "latent_knn", "source": name, "seed": seed, "value": v})
    base = base | {"task": "retrieval", "target": "", "probe": ""}
    for (name, seed), emb in models.items():
        for s in fold.test:
            for metric, v in cross_modal(emb.latent(s), emb.gene(s)).items():
                rows.append(base | {"metric": metric, "fold": s, "source": name, "seed": seed, "value": v})
    return rows


def _fewshot_rows(cfg: Her2stBenchConfig, sec: Section, models: dict) -> list[dict]:
    """Few-shot rows of the label section, with the models pretrained without it."""
    y = sec.adata.obs["label"].astype(object).to_numpy()
    own = {(v, i): emb for (v, i, e), emb in models.items() if e == (sec.id,)}
    sources = _sources({sec.id: sec.features}, own, [sec.id])
    base = {"task": "fewshot", "protocol": f"{sec.id} regions", "target": ""}
    rows = []
    for name, seed, x in tqdm(
        sources, desc="bench: few-shot", unit="source", disable=not cfg.progress, file=sys.stderr
    ):
        res = result_rows(few_shot(x[sec.id], y, ks=cfg.ks, seeds=cfg.seeds), **base, source=name, seed=seed)
        rows += res.to_dict("records")
    return rows


def write_results(out: Path, long: pd.DataFrame) -> pd.DataFrame:
    """Write the bench's tables into ``out`` (long rows, summary, per-fold, markdown); return the summary."""
    long = long_table(long)
    atomic_write_text(out / "results_long.csv", long.to_csv(index=False))
    summary = summarise(long, KEYS).sort_values(KEYS, kind="stable").reset_index(drop=True)
    atomic_write_text(out / "results.csv", summary.to_csv(index=False))
    genes = long[long.task == "genes"]
    by_fold = summarise(genes, ["protocol", "fold", "target", "probe", "source"])
    atomic_write_text(out / "results_by_fold.csv", by_fold.to_csv(index=False))
    text = "# her2st benchmark\n\n" + to_markdown(headline(summary)) + "\n"
    if "classes" in long:
        used = long.dropna(subset=["classes"]).groupby("k")["classes"].first()
        used = used.sort_index(key=lambda i: pd.to_numeric(i, errors="coerce"))
        text += (
            "\n## Few-shot classes per k\n\n"
            + "\n".join(f"- k = {k}: {c.replace(';', ', ')}" for k, c in used.items())
            + "\n"
        )
    text += "\n## Gene prediction per fold (mean over pretraining seeds)\n\n" + to_markdown(by_fold) + "\n"
    text += "\n## Every cell\n\n" + to_markdown(summary) + "\n"
    atomic_write_text(out / "results.md", text)
    return summary


def headline(summary: pd.DataFrame) -> pd.DataFrame:
    """Side-by-side table: one row per task/protocol/target/probe/metric(/k), one column per source."""
    s = summary.copy()
    s["cell"] = [
        f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else f"{m:.3f}"
        for m, lo, hi in zip(s["mean"], s["ci_low"], s["ci_high"], strict=True)
    ]
    keep = (
        s["task"].isin(["genes", "islands"])
        | ((s["task"] == "retrieval") & (s["metric"].str.contains("@10")))
        | ((s["task"] == "fewshot") & (s["metric"] == "balanced_accuracy"))
    )
    rows = ["task", "protocol", "target", "probe", "metric", "k"]
    wide = s[keep].pivot_table(index=rows, columns="source", values="cell", aggfunc="first").reset_index()
    k = pd.to_numeric(wide["k"], errors="coerce").fillna(-1)
    wide = wide.assign(_k=k).sort_values([*rows[:5], "_k"], kind="stable").drop(columns="_k").fillna("–")
    first = ["raw", "spade", "single_expert", "one_epoch", "raw+spade"]
    order = [c for c in first if c in wide.columns] + sorted(c for c in wide.columns if c not in first + rows)
    return wide[rows + order]
