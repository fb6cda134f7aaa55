"""Ablation of the small-cohort options on the five real her2st sections: one row per option.

Each row is ``spade-st bench her2st`` with only the SPADE source (a config, ``her2st_paper`` or the tuned
``her2st``, plus that row's overrides), >= 3 pretraining seeds, both protocols, both targets and both probes, few-shot on A1, and the
expert-island numbers. The raw-feature row is measured in the same run. Usage::

    python benchmarks/her2st_ablation.py --out runs/ablation [--pretrain-seeds 3] [--rows paper residual ...]

Prints the table (also written to OUT/ablation.md and OUT/ablation.csv); each row's full results stay in
OUT/<row>/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from _common import CACHE, her2st_root, last_line

#: row -> (pretrain config, overrides)
ROWS = {
    "paper": ("her2st_paper", {}),
    "min_expert_spots": ("her2st_paper", {"min_expert_spots": None}),
    "shared_gene_head": ("her2st_paper", {"shared_gene_head": True}),
    "residual": ("her2st_paper", {"output": "residual"}),
    "residual_whiten": ("her2st_paper", {"output": "residual", "whiten": True}),
    "concat": ("her2st_paper", {"output": "concat"}),
    "gene_smoothing": ("her2st_paper", {"gene_smoothing": 1.5}),
    "gene_library_size": ("her2st_paper", {"gene_library_size": True}),
    "recon_weight": ("her2st_paper", {"recon_weight": 1.0}),
    "early_stop": ("her2st_paper", {"early_stop": 10}),
    "tuned": ("her2st", {}),
    # the tuned setting before its projection was rotated, and options measured on top of that
    "tuned_unrotated": ("her2st", {"rotate": False}),
    # a learning rate at which the residual experts' part can move off zero
    "tuned_lr": ("her2st", {"rotate": False, "lr": 1e-3}),
    "tuned_lr_recon": ("her2st", {"rotate": False, "lr": 1e-3, "recon_weight": 1.0}),
    "tuned_expression_projection": ("her2st", {"rotate": False, "projection": "expression"}),
    "tuned_out_dim_128": ("her2st", {"rotate": False, "out_dim": 128}),
    "tuned_out_dim_128_rotate": ("her2st", {"out_dim": 128}),
    "residual_rotate": ("her2st_paper", {"output": "residual", "rotate": True}),
}


SHORT = {"within_patient": "within", "leave_one_patient_out": "LOPO"}


def _cells(summary: pd.DataFrame, source: str) -> dict[str, str]:
    """The row's cells: genes (protocol x target x probe), few-shot logistic k = 8 and 16, expert islands."""
    s = summary[summary["source"] == source]
    out = {}
    for r in s.itertuples():
        if r.task == "genes" and r.probe != "latent_knn":
            key = f"{SHORT[r.protocol]} {r.target} {r.probe}"
        elif r.task == "fewshot" and r.probe == "logistic" and r.metric == "balanced_accuracy" and r.k in ("8", "16"):
            key = f"few-shot k={r.k}"
        elif r.task == "islands" and r.metric == "silhouette_by_expert":
            key = "islands (silhouette)"
        else:
            continue
        out[key] = f"{r.mean:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=CACHE / "her2st-ablation")
    ap.add_argument("--features", type=Path, help="FEATS/efficientnet_lite0 of the five sections (default: extract)")
    ap.add_argument("--pretrain-seeds", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=10, help="few-shot draws per model")
    ap.add_argument("--epochs", type=int, help="override the configs' epochs (a quick check, not a result)")
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    ap.add_argument("--collect", action="store_true", help="only tabulate the rows' existing OUT/<row>/results.csv")
    args = ap.parse_args(argv)

    from spade_st.cli import main as cli
    from spade_st.eval.her2st_bench import Her2stBenchConfig, run_her2st_bench

    root = None if args.collect else her2st_root()
    feats = args.features
    if feats is None and not args.collect:
        feats = CACHE / "her2st-feats" / "efficientnet_lite0"
        if cli(["extract", "--data", str(root), "--encoder", "efficientnet_lite0", "--out", str(feats.parent)]):
            sys.exit("extraction failed")
    table, t0 = [], time.perf_counter()
    for name in args.rows:
        config, overrides = ROWS[name]
        cfg = Her2stBenchConfig(
            data=root,
            features=feats,
            out=args.out / name,
            config=config,
            overrides=overrides,
            epochs=args.epochs,
            pretrain_seeds=args.pretrain_seeds,
            seeds=args.seeds,
            ks=(1, 2, 4, 8, 16),
            variants=("spade",),
        )
        if args.collect:
            summary = pd.read_csv(args.out / name / "results.csv", dtype={"k": str}, keep_default_na=False)
        else:
            summary = run_her2st_bench(cfg)
        summary["k"] = summary["k"].astype(str)
        if not table:
            table.append({"row": "raw features"} | _cells(summary, "raw"))
        islands_raw = _cells(summary, "raw (spade experts)").get("islands (silhouette)", "–")
        table.append({"row": name} | _cells(summary, "spade") | {"islands, raw features": islands_raw})
        print(f"{name}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    df = pd.DataFrame(table)
    order = [f"{p} {t} {pr}" for p in SHORT.values() for t in ("log1p", "cp10k") for pr in ("hest_ridge", "ridge_cv")]
    order += ["few-shot k=8", "few-shot k=16", "islands (silhouette)", "islands, raw features"]
    df = df[["row"] + [c for c in order if c in df.columns]]
    from spade_st._atomic import atomic_write_text
    from spade_st.eval.stats import to_markdown

    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "ablation.csv", df.to_csv(index=False))
    atomic_write_text(args.out / "ablation.md", to_markdown(df.fillna("–")) + "\n")
    print(to_markdown(df.fillna("–")))
    last_line(rows=len(table) - 1, seconds=time.perf_counter() - t0)


if __name__ == "__main__":
    main()
