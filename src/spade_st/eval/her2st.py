"""``spade-st bench her2st``: raw encoder vs SPADE vs a single expert on the five real her2st sections.

Leakage-free by construction: every SPADE model used on a held-out section was pretrained without it
(leave-one-section-out: one model per fold, ``--exclude`` the held-out section). Tasks:

1. gene expression (HEST-Benchmark ridge on top-50 training-variable genes; and, for SPADE sources, the
   BLEEP-style kNN route in the shared latent space), mean Pearson per held-out section;
2. cross-modal retrieval on the held-out section (Recall@1/5/10 both ways; SPADE sources);
3. few-shot classification of A1's pathologist regions (k shots per class, >= 20 seeds, 3 probes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._atomic import atomic_write_text
from .fewshot import DEFAULT_K, few_shot
from .genes import hest_ridge, knn_expression, log1p_cp10k, pearson_per_gene, top_variable_genes
from .retrieval import cross_modal
from .stats import summarise, to_markdown


@dataclass
class Her2stBenchConfig:
    """Options of ``spade-st bench her2st``."""

    data: Path
    features: Path
    out: Path
    model: Path | None = None  #: one trained model for every fold (flags leakage); default: train per fold
    config: str = "her2st"
    epochs: int | None = None
    seeds: int = 20
    ks: tuple[int, ...] = DEFAULT_K
    n_genes: int = 50
    single_expert: bool = True
    label_section: str = "A1"
    sections: list[str] = field(default_factory=list)  #: default: every sample of the root
    progress: bool = True


def _fold_model(cfg: Her2stBenchConfig, held: str, experts: int | None, tag: str) -> Path:
    from ..train.config import load_config
    from ..train.pretrain import pretrain

    out = Path(cfg.out) / "models" / tag / held
    pc = load_config(
        cfg.config, data=cfg.data, features=cfg.features, out=out, exclude=[held], epochs=cfg.epochs, progress=False
    )
    if experts is not None:
        pc.experts = experts
    if not (out / "model.safetensors").is_file():
        pretrain(pc)
    return out


def run_her2st_bench(cfg: Her2stBenchConfig) -> pd.DataFrame:
    """Run the benchmark; writes ``results.csv`` and ``results.md`` under ``cfg.out`` and returns the summary."""
    from ..encoders.features import read_features
    from ..experts.model import SpadeModel
    from ..genes import GenePanel
    from ..io import read_hest

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    samples = {s.id: s for s in read_hest(cfg.data)}
    sections = cfg.sections or list(samples)
    feats = {sid: read_features(Path(cfg.features) / f"{sid}.h5").features for sid in sections}
    expr = {sid: log1p_cp10k(samples[sid].adata) for sid in sections}
    sources: dict[str, tuple[int | None, str] | None] = {"raw": None, "spade": (None, "spade")}
    if cfg.single_expert:
        sources["single_expert"] = (1, "single_expert")
    rows = []

    def models_for(held):
        out_m = {}
        for name, spec in sources.items():
            if spec is None:
                continue
            path = cfg.model if (cfg.model is not None and name == "spade") else _fold_model(cfg, held, *spec)
            out_m[name] = SpadeModel.from_pretrained(path)
        return out_m

    for held in sections:
        train = [s for s in sections if s != held]
        genes = top_variable_genes([expr[s] for s in train], cfg.n_genes)
        ytr = np.concatenate([expr[s][genes].to_numpy() for s in train])
        yte = expr[held][genes].to_numpy()
        models = models_for(held)
        for name in sources:
            if name == "raw":
                ztr, zte = np.concatenate([feats[s] for s in train]), feats[held]
                leak = False
            else:
                m = models[name]
                ztr = np.concatenate([m.embed(feats[s]) for s in train])
                zte = m.embed(feats[held])
                leak = held in m.config.split.get("train", []) + m.config.split.get("val", [])
            r = pearson_per_gene(hest_ridge(ztr, ytr, zte), yte)
            rows.append(
                {
                    "source": name,
                    "task": "genes_ridge",
                    "metric": "mean_pearson",
                    "k": "",
                    "fold": held,
                    "value": float(np.nanmean(r)),
                    "leak": leak,
                }
            )
            if name != "raw":
                panel = GenePanel(genes=m.config.genes, mode=m.config.gene_mode)
                keys = np.concatenate(
                    [m.embed_genes(panel.transform(samples[s].adata), features=feats[s]) for s in train]
                )
                r = pearson_per_gene(knn_expression(zte, keys, ytr), yte)
                rows.append(
                    {
                        "source": name,
                        "task": "genes_knn",
                        "metric": "mean_pearson",
                        "k": "",
                        "fold": held,
                        "value": float(np.nanmean(r)),
                        "leak": leak,
                    }
                )
                g_te = m.embed_genes(panel.transform(samples[held].adata), features=feats[held])
                for metric, v in cross_modal(zte, g_te).items():
                    rows.append(
                        {
                            "source": name,
                            "task": "retrieval",
                            "metric": metric,
                            "k": "",
                            "fold": held,
                            "value": v,
                            "leak": leak,
                        }
                    )
            if held == cfg.label_section and "label" in samples[held].adata.obs:
                y = samples[held].adata.obs["label"].astype(object).to_numpy()
                fs = few_shot(zte, y, ks=cfg.ks, seeds=cfg.seeds)
                for r_ in fs.itertuples():
                    rows.append(
                        {
                            "source": name,
                            "task": f"fewshot_{r_.probe}",
                            "metric": r_.metric,
                            "k": r_.k,
                            "fold": f"seed{r_.seed}",
                            "value": r_.value,
                            "leak": leak,
                        }
                    )
    long = pd.DataFrame(rows)
    atomic_write_text(out / "results_long.csv", long.to_csv(index=False))
    summary = summarise(long, ["task", "metric", "k", "source"])
    summary = summary.sort_values(["task", "metric", "k", "source"], kind="stable").reset_index(drop=True)
    atomic_write_text(out / "results.csv", summary.to_csv(index=False))
    atomic_write_text(out / "results.md", "# her2st benchmark\n\n" + to_markdown(summary) + "\n")
    return summary


def headline(summary: pd.DataFrame) -> pd.DataFrame:
    """The side-by-side table: one row per task/metric(/k), one column per source (mean [95% CI])."""
    s = summary.copy()
    s["cell"] = [
        f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else f"{m:.3f}"
        for m, lo, hi in zip(s["mean"], s["ci_low"], s["ci_high"], strict=True)
    ]
    keep = s["task"].isin(["genes_ridge", "genes_knn", "retrieval"]) | (
        s["task"].str.startswith("fewshot") & (s["metric"] == "balanced_accuracy")
    )
    wide = s[keep].pivot_table(index=["task", "metric", "k"], columns="source", values="cell", aggfunc="first")
    return wide.reset_index()
