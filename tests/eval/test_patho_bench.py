"""`spade-st evaluate` on a Patho-Bench split file: its folds, its few-shot draw, its summary JSON, bad input.

The expectations are recomputed here from the split file with pandas/numpy only (no spade-st code), from
Patho-Bench's documented rules (660e770: ``DataSplit.convert_to_json``, ``sample_fewshots``, ``get_mean_se``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import spade_st
from spade_st._validation import SpadeInputError
from spade_st.cli import main
from spade_st.datasets.bags import planted_bags
from spade_st.eval.patho_bench import sample_fewshots, summary
from spade_st.eval.tasks import run_task
from spade_st.io.features import FeatureSet, write_features

N_CASES = 36


def _fold_column(rng, n: int) -> list[str]:
    roles = np.array(["train"] * (n - 12) + ["test"] * 9 + ["-1"] * 2 + ["val"])
    return rng.permutation(roles).tolist()


@pytest.fixture
def pb(tmp_path):
    """36 cases, every third with two slides; 3 folds of train/val/test/-1; a NaN-label row; a config.yaml."""
    bags, y, times, events = planted_bags(n_slides=N_CASES * 2, dim=8, seed=3, shift=3.0, n_instances=(10, 20))
    rng = np.random.default_rng(0)
    folds = {f"fold_{k}": _fold_column(rng, N_CASES) for k in range(3)}
    rows = []
    for c in range(N_CASES):
        for s in range(2 if c % 3 == 0 else 1):
            slide = f"SL{c:02d}{'ab'[s]}"
            write_features(tmp_path / "feats" / f"{slide}.h5", FeatureSet(features=bags[2 * c + s], coords=None))
            row = {"case_id": f"C{c:02d}", "slide_id": slide, "label": int(y[2 * c]), "OS_days": times[2 * c]}
            rows.append(row | {"OS_event": int(events[2 * c])} | {k: v[c] for k, v in folds.items()})
    rows.append({"case_id": "C99", "slide_id": "SLnan", "label": np.nan} | {k: "test" for k in folds})
    df = pd.DataFrame(rows)
    df["OS"] = df["label"]
    df.to_csv(tmp_path / "k=all.tsv", sep="\t", index=False)
    info = {"sample_col": "case_id", "extra_cols": [], "label_dict": {0: "a", 1: "b"}, "metrics": ["macro-ovr-auc"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(info | {"task_col": "label", "task_type": "classification"}))
    return tmp_path


def _manifest(root, **extra) -> str:
    task = {"name": "pb", "type": "slide_classification", "sources": {"raw": "feats"}, "epochs": 1, "folds": 2}
    task |= {"split": {"patho_bench": "k=all.tsv", "config": "config.yaml"}} | extra
    (root / "task.yaml").write_text(yaml.safe_dump(task))
    return str(root / "task.yaml")


def _membership(split: pd.DataFrame) -> pd.DataFrame:
    """Independently: per fold, each labelled case with a train/val/test role (its slides agree)."""
    split = split.dropna(subset=["label"]).drop_duplicates("case_id")
    cols = [c for c in split.columns if c.startswith("fold_")]
    long = split.melt(id_vars="case_id", value_vars=cols, var_name="fold", value_name="role")
    return long[long.role != "-1"].rename(columns={"case_id": "sample"})


def _key(df: pd.DataFrame) -> set[tuple]:
    return set(map(tuple, df[["fold", "sample", "role"]].astype(str).to_numpy()))


@pytest.mark.slow
def test_folds_and_summary_follow_the_file(pb):
    assert main(["evaluate", _manifest(pb), "--out", str(pb / "res")]) == 0
    used = pd.read_csv(pb / "res" / "patho_bench_folds.csv", dtype=str)
    expect = _membership(pd.read_csv(pb / "k=all.tsv", sep="\t", dtype={"case_id": str}))
    assert _key(used) == _key(expect) and "C99" not in set(used["sample"])
    long = pd.read_csv(pb / "res" / "results_long.csv")
    assert sorted(long["fold"].unique()) == ["fold_0", "fold_1", "fold_2"]
    for probe in ("abmil", "linear"):
        got = json.loads((pb / "res" / "patho_bench" / "raw" / probe / "test_metrics_summary.json").read_text())
        assert set(got) == {"macro-ovr-auc", "bacc"}
        for theirs, ours in (("macro-ovr-auc", "auroc"), ("bacc", "balanced_accuracy")):
            per_fold = long[(long.probe == probe) & (long.metric == ours)].sort_values("fold")["value"].to_numpy()
            assert set(got[theirs]) == {"mean", "se", "formatted"}
            assert got[theirs]["mean"] == pytest.approx(per_fold.mean())
            assert got[theirs]["se"] == pytest.approx(per_fold.std() / np.sqrt(3))
            assert re.fullmatch(r"\d\.\d{3} ± \d\.\d{3}", got[theirs]["formatted"])


def _their_draw(split: pd.DataFrame, shots: int, seed: int = 42) -> pd.DataFrame:
    """Patho-Bench's draw, re-implemented from its rules: samples in file order, train -> -1, np.random.seed(seed),
    then per fold, per class (ascending int labels), np.random.choice(ids, shots, replace=False)."""
    split = split.dropna(subset=["label"]).drop_duplicates("case_id").reset_index(drop=True)
    cols = [c for c in split.columns if c.startswith("fold_")]
    split[cols] = split[cols].replace("train", "-1")
    np.random.seed(seed)  # noqa: NPY002 - the legacy global stream is what Patho-Bench uses
    for col in cols:
        for label in sorted(set(split["label"].astype(int))):
            ids = split.loc[(split[col] == "-1") & (split["label"] == label), "case_id"].tolist()
            chosen = ids if len(ids) < shots else np.random.choice(ids, shots, replace=False)  # noqa: NPY002
            split.loc[split["case_id"].isin(chosen), col] = "train"
    return split


def test_fewshot_draw_in_evaluate_equals_patho_benchs(pb):
    assert main(["evaluate", _manifest(pb, shots=3), "--out", str(pb / "res")]) == 0
    used = pd.read_csv(pb / "res" / "patho_bench_folds.csv", dtype=str)
    drawn = _membership(_their_draw(pd.read_csv(pb / "k=all.tsv", sep="\t", dtype={"case_id": str}), 3))
    drawn = drawn[drawn.role != "val"]  # a few-shot probe trains on the drawn shots only, not on val rows
    assert _key(used) == _key(drawn) and not (used.role == "val").any()
    assert (used[used.role == "train"].groupby("fold").size() == 6).all()
    assert set(pd.read_csv(pb / "res" / "results_long.csv", dtype={"k": str})["k"]) == {"3"}


def test_fewshot_function_matches_numpy_and_keeps_small_classes():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 50)
    labels[:2] = 3
    folds = rng.choice(["train", "test", "-1", "val"], size=(50, 4), p=[0.6, 0.25, 0.1, 0.05])
    folds[:2] = "train"
    with pytest.warns(UserWarning, match="class 3 has 2 samples"):
        got = sample_fewshots(folds, labels, 4)
    table = pd.DataFrame(folds, columns=[f"fold_{k}" for k in range(4)])
    table.insert(0, "label", labels)
    table.insert(0, "case_id", [f"C{i:02d}" for i in range(50)])
    expect = _their_draw(table, 4)[[f"fold_{k}" for k in range(4)]].to_numpy()
    np.testing.assert_array_equal(got, expect)


def test_one_fold_is_bootstrapped():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    fold = (y, y * 0.6 + rng.uniform(size=40) * 0.4)
    got = summary([fold], lambda t, p: {"acc": float(np.mean((p > 0.5) == t))})
    assert set(got["acc"]) == {"mean", "lower", "upper", "formatted"}
    assert got["acc"]["lower"] <= got["acc"]["mean"] <= got["acc"]["upper"]
    assert re.fullmatch(r"\d\.\d{3} \(\d\.\d{3}-\d\.\d{3}\)", got["acc"]["formatted"])


def _edit(root, change):
    df = pd.read_csv(root / "k=all.tsv", sep="\t", dtype={"case_id": str, "slide_id": str})
    change(df)
    df.to_csv(root / "k=all.tsv", sep="\t", index=False)


def _disagree(df):  # C00's two slides: the second gets another fold_0 role
    df.loc[1, "fold_0"] = "test" if df.loc[0, "fold_0"] != "test" else "train"


BAD = {
    "lacks column": lambda df: df.drop(columns=["slide_id"], inplace=True),
    "fold_1 has no test rows": lambda df: df.__setitem__("fold_1", df["fold_1"].replace("test", "train")),
    "not label_dict keys": lambda df: df.__setitem__("label", df["label"].replace(1, 7)),
    "disagree": _disagree,
}


@pytest.mark.parametrize("needle", list(BAD))
def test_bad_split_is_one_line_before_any_work(pb, needle):
    _edit(pb, BAD[needle])
    with pytest.raises(SpadeInputError, match=needle) as err:
        run_task(_manifest(pb), pb / "res")
    assert "\n" not in str(err.value) and not (pb / "res").exists()


def test_missing_feature_file_and_bad_manifest(pb, capsys):
    (pb / "feats" / "SL05a.h5").unlink()
    with pytest.raises(SpadeInputError, match=r"1 slide.*SL05a\.h5"):
        run_task(_manifest(pb), pb / "res")
    assert main(["evaluate", _manifest(pb, shots=1), "--out", str(pb / "res")]) == 1
    assert "shots" in capsys.readouterr().err


@pytest.mark.slow
def test_survival_split_writes_cindex(pb):
    info = yaml.safe_load((pb / "config.yaml").read_text())
    info |= {"task_col": "OS", "extra_cols": ["OS_days", "OS_event"], "task_type": "survival"}
    (pb / "config.yaml").write_text(yaml.safe_dump(info))
    # every death observed: ABMIL's small inner validation set always has comparable pairs (a censored-only one
    # makes sksurv refuse the C-index; survival.py's own limitation, not the split's)
    _edit(pb, lambda df: df.__setitem__("OS_event", 1))
    assert main(["evaluate", _manifest(pb, type="survival"), "--out", str(pb / "res")]) == 0
    long = pd.read_csv(pb / "res" / "results_long.csv")
    for probe in ("abmil_nll", "cox_mean"):
        got = json.loads((pb / "res" / "patho_bench" / "raw" / probe / "test_metrics_summary.json").read_text())
        per_fold = long[long.probe == probe]["value"].to_numpy()
        assert list(got) == ["cindex"] and got["cindex"]["mean"] == pytest.approx(per_fold.mean())


def test_paper_manifest_loads(tmp_path, monkeypatch):
    from spade_st.eval.tasks import load_task

    for var in ("FEATURES", "EMBEDDINGS"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("PB_SPLITS", str(tmp_path))
    task = load_task(Path(spade_st.__file__).parent / "configs" / "tasks" / "paper" / "panda_isup_grade.yaml")
    assert task.split["patho_bench"] == tmp_path / "panda" / "isup_grade" / "k=all.tsv"
