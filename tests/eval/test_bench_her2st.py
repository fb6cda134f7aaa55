"""`spade-st bench her2st` end to end on the real sections (short training, few seeds)."""

from __future__ import annotations

import json

import pandas as pd

from spade_st.cli import main


def test_bench_her2st_small(her2st_root, her2st_features, tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["bench", "her2st", "--data", str(her2st_root), "--features", str(her2st_features), "--out", str(out)]
    rc = main([*args, "--epochs", "2", "--pretrain-seeds", "1", "--seeds", "2", "--ks", "1", "8"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "within_patient" in printed and "leave_one_patient_out" in printed and "raw+spade" in printed
    res = pd.read_csv(out / "results.csv", keep_default_na=False)
    genes = res[res.task == "genes"]
    sources = {"raw", "spade", "single_expert", "one_epoch", "raw+spade"}
    for probe in ("hest_ridge", "ridge_cv"):
        for target in ("log1p", "cp10k"):
            cell = genes[(genes.probe == probe) & (genes.target == target)]
            assert set(cell.source) == sources, (probe, target)
            n = cell.set_index(["protocol", "source"])["n"]
            # within patient C: 3 folds; leave-one-patient-out over B and C (A1 left out): 2 folds; x 1 seed
            assert n["within_patient", "raw"] == 3 and n["within_patient", "spade"] == 3
            assert n["leave_one_patient_out", "raw"] == 2 and n["leave_one_patient_out", "raw+spade"] == 2
    assert set(genes[genes.probe == "latent_knn"].source) == {"spade", "single_expert", "one_epoch"}
    long = pd.read_csv(out / "results_long.csv", keep_default_na=False)
    assert "A1" not in set(long[long.task == "genes"].fold)
    assert set(long[(long.task == "genes") & (long.protocol == "within_patient")].fold) == {"C2", "C3", "C4"}
    few = res[(res.task == "fewshot") & (res.metric == "balanced_accuracy")]
    assert set(few.probe) == {"logistic", "knn", "simpleshot"} and set(few.source) == sources
    classes = long[long.task == "fewshot"].groupby("k")["classes"].agg(set)
    assert classes["8"] == {"adipose tissue;cancer in situ;connective tissue;invasive cancer"}  # 2 + 5 spots: out
    by_fold = pd.read_csv(out / "results_by_fold.csv", keep_default_na=False)
    assert {"C2", "C3", "C4", "patient B", "patient C"} <= set(by_fold.fold)
    md = (out / "results.md").read_text()
    assert md.startswith("# her2st benchmark") and "k = 8: adipose tissue, cancer in situ" in md
    # every model excluded its fold's test sections; with C4 held out, C2 and C3 train (never the majority to val)
    models = out / "models" / "spade" / "seed0"
    for excl in ("C4", "C2+C3+C4", "B4", "A1"):
        split = json.loads((models / excl / "config.json").read_text())["split"]
        assert split["excluded"] == excl.split("+") and not set(split["excluded"]) & set(split["train"] + split["val"])
    c4 = json.loads((models / "C4" / "config.json").read_text())["split"]
    assert {"C2", "C3"} <= set(c4["train"]) and c4["reasons"]
    lopo_c = json.loads((models / "C2+C3+C4" / "config.json").read_text())["split"]
    assert lopo_c["val"] == [] and lopo_c["val_blocks"] == ["A1", "B4"]  # two patients left: spatial blocks
    single = json.loads((out / "models" / "single_expert" / "seed0" / "C4" / "config.json").read_text())
    assert single["n_experts"] == 1 and single["train"]["seed"] == 42
    one_epoch = json.loads((out / "models" / "one_epoch" / "seed0" / "C4" / "config.json").read_text())
    assert one_epoch["train"]["epochs"] == 1
