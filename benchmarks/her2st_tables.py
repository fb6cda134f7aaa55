"""The README's her2st tables, from two ``spade-st bench her2st`` runs (the paper's setting and the tuned one).

    python benchmarks/her2st_tables.py --paper runs/her2st/bench-paper --tuned runs/her2st/bench

Every cell is ``mean [95% CI]`` of the bench's own ``results.csv`` (nothing is recomputed here): genes over
folds x pretraining seeds; few-shot over pretraining seeds x draws; raw features have no pretraining seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

COLUMNS = [  # (header, run, source)
    ("raw features", "paper", "raw"),
    ("SPADE, paper", "paper", "spade"),
    ("paper, 1 epoch", "paper", "one_epoch"),
    ("SPADE, tuned", "tuned", "spade"),
    ("tuned, 1 epoch", "tuned", "one_epoch"),
    ("tuned, 1 expert", "tuned", "single_expert"),
    ("raw ‖ tuned", "tuned", "raw+spade"),
]
SHORT = {"within_patient": "within patient C", "leave_one_patient_out": "leave one patient out"}


def _read(folder: Path) -> pd.DataFrame:
    s = pd.read_csv(folder / "results.csv", dtype={"k": str}, keep_default_na=False, na_values=["nan", "NaN"])
    s["cell"] = [
        f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if pd.notna(lo) else f"{m:.3f}"
        for m, lo, hi in zip(s["mean"], s["ci_low"], s["ci_high"], strict=True)
    ]
    return s


def _row(runs: dict[str, pd.DataFrame], where: dict, columns=COLUMNS) -> list[str]:
    cells = []
    for _, run, source in columns:
        s = runs[run]
        m = (s["source"] == source) & pd.concat([s[k].astype(str) == str(v) for k, v in where.items()], axis=1).all(1)
        cells.append(s.loc[m, "cell"].iloc[0] if m.any() else "–")
    return cells


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def tables(paper: Path, tuned: Path) -> str:
    runs = {"paper": _read(paper), "tuned": _read(tuned)}
    heads = [c[0] for c in COLUMNS]
    genes = []
    for protocol in SHORT:
        for target in ("log1p", "cp10k"):
            for probe in ("hest_ridge", "ridge_cv", "latent_knn"):
                where = {"task": "genes", "protocol": protocol, "target": target, "probe": probe}
                genes.append([SHORT[protocol], target, probe, *_row(runs, where)])
    out = ["Gene expression, mean Pearson r over each fold's 50 most variable genes:", ""]
    out += [_table(["protocol", "target", "probe", *heads], genes), ""]
    few = runs["paper"][(runs["paper"]["task"] == "fewshot")]
    fewshot = []
    for probe in ("logistic", "simpleshot"):
        for k in sorted(few["k"].unique(), key=int):
            where = {"task": "fewshot", "probe": probe, "metric": "balanced_accuracy", "k": k}
            fewshot.append([probe, k, *_row(runs, where)])
    out += ["Few-shot classification of A1's pathologist regions, balanced accuracy:", ""]
    out += [_table(["probe", "k", *heads], fewshot), ""]
    other = []
    for protocol in SHORT:
        for metric in ("img2expr_R@10", "expr2img_R@10"):
            where = {"task": "retrieval", "protocol": protocol, "metric": metric}
            other.append([f"retrieval {metric}, {SHORT[protocol]}", *_row(runs, where)[1:3], *_row(runs, where)[3:5]])
    isl_cols = [
        ("", "paper", "spade"),
        ("", "paper", "raw (spade experts)"),
        ("", "tuned", "spade"),
        ("", "tuned", "raw (spade experts)"),
    ]
    for metric in ("silhouette_by_expert", "knn_same_expert"):
        other.append([f"expert islands: {metric}", *_row(runs, {"task": "islands", "metric": metric}, isl_cols)])
    out += ["Retrieval (Recall@10 on held-out sections) and expert islands (all sections; each model's experts):", ""]
    head = ["", "paper: SPADE", "paper: 1 epoch / raw features", "tuned: SPADE", "tuned: 1 epoch / raw features"]
    out += [_table(head, other)]
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paper", type=Path, required=True)
    ap.add_argument("--tuned", type=Path, required=True)
    args = ap.parse_args(argv)
    print(tables(args.paper, args.tuned))


if __name__ == "__main__":
    main()
