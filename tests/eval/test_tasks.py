"""`spade-st evaluate TASK.yaml` on synthetic slide bags and on patch labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from spade_st.cli import main
from spade_st.datasets.bags import planted_bags
from spade_st.encoders.features import FeatureSet, write_features


def _write_bags(folder, bags, noise=False):
    rng = np.random.default_rng(9)
    for i, b in enumerate(bags):
        x = rng.normal(size=b.shape).astype(np.float32) if noise else b
        write_features(folder / f"S{i:03d}.h5", FeatureSet(features=x, coords=np.zeros((len(b), 2), int)))


@pytest.fixture
def slide_task(tmp_path):
    bags, y, times, events = planted_bags(n_slides=60, dim=16, seed=1, shift=3.0)
    _write_bags(tmp_path / "good", bags)
    _write_bags(tmp_path / "noise", bags, noise=True)
    ids = [f"S{i:03d}" for i in range(60)]
    pd.DataFrame(
        {
            "slide": ids,
            "label": np.where(y == 1, "tumour", "normal"),
            "patient": [f"P{i // 2}" for i in range(60)],
            "time": times,
            "event": events,
        }
    ).to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path


def test_slide_classification_task(slide_task, tmp_path):
    m = slide_task / "task.yaml"
    m.write_text(
        yaml.safe_dump(
            {
                "name": "planted",
                "type": "slide_classification",
                "labels": "labels.csv",
                "sources": {"good": "good", "noise": "noise"},
                "ks": [4],
                "seeds": 1,
                "folds": 2,
                "epochs": 4,
            }
        )
    )
    assert main(["evaluate", str(m), "--out", str(tmp_path / "res")]) == 0
    res = pd.read_csv(tmp_path / "res" / "results.csv").set_index(["probe_metric", "k", "source"])
    assert res.loc[("abmil:auroc", "all", "good"), "mean"] > 0.85
    assert res.loc[("linear:auroc", "all", "good"), "mean"] > 0.8
    assert abs(res.loc[("abmil:auroc", "all", "noise"), "mean"] - 0.5) < 0.3
    assert ("linear:balanced_accuracy", "4", "good") in res.index


def test_survival_task(slide_task, tmp_path):
    m = slide_task / "surv.yaml"
    m.write_text(
        yaml.safe_dump(
            {
                "name": "surv",
                "type": "survival",
                "labels": "labels.csv",
                "sources": {"good": "good"},
                "seeds": 1,
                "epochs": 3,
            }
        )
    )
    assert main(["evaluate", str(m), "--out", str(tmp_path / "res")]) == 0
    res = pd.read_csv(tmp_path / "res" / "results.csv")
    assert set(res.probe_metric) == {"abmil_nll:c_index", "cox_mean:c_index"}
    assert res["mean"].between(0, 1).all()


def test_patch_task(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for s in ("A", "B"):
        y = np.repeat(["x", "y"], 30)
        feats = rng.normal(size=(60, 8)).astype(np.float32) + (y == "y")[:, None] * 3
        bcs = [f"{s}{i}" for i in range(60)]
        write_features(tmp_path / "src" / f"{s}.h5", FeatureSet(features=feats, barcode=np.array(bcs, dtype=object)))
        rows += [{"sample": s, "barcode": b, "label": lab} for b, lab in zip(bcs, y, strict=True)]
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    m = tmp_path / "t.yaml"
    m.write_text(
        yaml.safe_dump(
            {
                "name": "p",
                "type": "patch_classification",
                "labels": "labels.csv",
                "sources": {"f": "src"},
                "ks": [1, 4],
                "seeds": 3,
            }
        )
    )
    assert main(["evaluate", str(m), "--out", str(tmp_path / "r")]) == 0
    res = pd.read_csv(tmp_path / "r" / "results.csv").set_index(["probe_metric", "k", "source"])
    assert res.loc[("logistic:balanced_accuracy", 4, "f"), "mean"] > 0.9


def test_bad_manifest(tmp_path, capsys):
    m = tmp_path / "t.yaml"
    m.write_text("name: x\ntype: regression\nlabels: l.csv\nsources: {}\n")
    assert main(["evaluate", str(m), "--out", str(tmp_path / "r")]) == 1
    assert "is not one of" in capsys.readouterr().err
