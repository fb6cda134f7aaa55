"""`spade-st bench her2st` end to end on the real sections (short training, few seeds)."""

from __future__ import annotations

import pandas as pd

from spade_st.cli import main


def test_bench_her2st_small(her2st_root, her2st_features, tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(
        [
            "bench",
            "her2st",
            "--data",
            str(her2st_root),
            "--features",
            str(her2st_features),
            "--out",
            str(out),
            "--epochs",
            "3",
            "--seeds",
            "3",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "genes_ridge" in printed and "spade" in printed and "raw" in printed
    res = pd.read_csv(out / "results.csv")
    ridge = res[res.task == "genes_ridge"]
    assert set(ridge.source) == {"raw", "spade", "single_expert"}
    assert (ridge.n == 5).all()  # one value per held-out section
    assert (ridge["ci_low"] <= ridge["mean"]).all() and (ridge["mean"] <= ridge["ci_high"]).all()
    few = res[res.task.str.startswith("fewshot") & (res.metric == "balanced_accuracy")]
    assert set(few.task) == {"fewshot_logistic", "fewshot_knn", "fewshot_simpleshot"} and (few.n == 3).all()
    long = pd.read_csv(out / "results_long.csv")
    assert not long["leak"].any()  # every SPADE model excluded its held-out section
    assert (out / "results.md").read_text().startswith("# her2st benchmark")
    # each per-fold model excluded exactly its section
    import json

    for held in ["A1", "C3"]:
        split = json.loads((out / "models" / "spade" / held / "split.json").read_text())
        assert split["excluded"] == [held] and held not in split["train"] + split["val"]
