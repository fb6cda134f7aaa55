"""`spade-st evaluate TASK.yaml` on synthetic slide bags and on patch labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from spade_st._validation import SpadeInputError
from spade_st.cli import main
from spade_st.datasets.bags import planted_bags
from spade_st.eval.tasks import run_task
from spade_st.io.features import FeatureSet, write_features

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny torch models: faster on one thread


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
    res = pd.read_csv(tmp_path / "res" / "results.csv", dtype={"k": str}).set_index(["probe", "metric", "k", "source"])
    assert res.loc[("abmil", "auroc", "all", "good"), "mean"] > 0.85
    assert res.loc[("linear", "auroc", "all", "good"), "mean"] > 0.8
    assert abs(res.loc[("abmil", "auroc", "all", "noise"), "mean"] - 0.5) < 0.3
    assert ("linear", "balanced_accuracy", "4", "good") in res.index


def test_survival_task(tmp_path):
    """150 planted slides: the hazard reaches the Cox model only if times, events and bags stay aligned through
    the task (measured: 0.71 on the planted features, 0.50 on their noise twin)."""
    bags, _, times, events = planted_bags(n_slides=150, dim=16, seed=5, shift=4.0)
    _write_bags(tmp_path / "good", bags)
    _write_bags(tmp_path / "noise", bags, noise=True)
    ids = [f"S{i:03d}" for i in range(150)]
    labels = {"slide": ids, "patient": [f"P{i // 2}" for i in range(150)], "time": times, "event": events}
    pd.DataFrame(labels).to_csv(tmp_path / "labels.csv", index=False)
    m = tmp_path / "surv.yaml"
    task = {"name": "surv", "type": "survival", "labels": "labels.csv", "sources": {"good": "good", "noise": "noise"}}
    m.write_text(yaml.safe_dump(task | {"seeds": 1, "epochs": 1}))
    assert main(["evaluate", str(m), "--out", str(tmp_path / "res")]) == 0
    res = pd.read_csv(tmp_path / "res" / "results.csv").set_index(["source", "probe"])
    assert set(res.index.get_level_values("probe")) == {"abmil_nll", "cox_mean"} and set(res.metric) == {"c_index"}
    assert res.loc[("good", "cox_mean"), "mean"] > 0.62
    assert res.loc[("good", "cox_mean"), "mean"] > res.loc[("noise", "cox_mean"), "mean"] + 0.1
    assert res["mean"].between(0, 1).all()  # a 1-epoch ABMIL: a plumbing check (its learning: test_mil_survival)


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
    res = pd.read_csv(tmp_path / "r" / "results.csv", dtype={"k": str}).set_index(["probe", "metric", "k", "source"])
    assert res.loc[("logistic", "balanced_accuracy", "4", "f"), "mean"] > 0.9
    long = pd.read_csv(tmp_path / "r" / "results_long.csv")
    assert list(long.columns[:9]) == ["task", "source", "probe", "target", "metric", "k", "seed", "fold", "value"]


def test_bad_manifest(tmp_path, capsys):
    m = tmp_path / "t.yaml"
    m.write_text("name: x\ntype: regression\nlabels: l.csv\nsources: {}\n")
    assert main(["evaluate", str(m), "--out", str(tmp_path / "r")]) == 1
    assert "is not one of" in capsys.readouterr().err


def _her2st_hest_root(root, spots=40, genes=30, seed=0):
    """A HEST-layout root with HEST-1k's her2st ids and patients (from the real table), expression driven by a
    per-spot latent state; returns {id: (barcodes, latent)}."""
    import anndata as ad
    import h5py

    from spade_st.io.layout import Layout, upsert_metadata_row

    from conftest import HEST_TABLE, require

    table = pd.read_csv(require(HEST_TABLE))
    table = table[table["id"].str.fullmatch(r"SPA1(19|[2-4]\d|5[0-4])")]
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(3, genes))
    lay, out = Layout(root), {}
    for sid, patient in zip(table["id"], table["patient"], strict=True):
        z = rng.normal(size=(spots, 3))
        counts = rng.poisson(np.exp(1.0 + 0.6 * z @ loadings)).astype(np.float32)
        bc = np.array([f"{sid}_{i}" for i in range(spots)])
        a = ad.AnnData(counts, obs=pd.DataFrame(index=bc), var=pd.DataFrame(index=[f"G{j}" for j in range(genes)]))
        a.obsm["spatial"] = rng.uniform(0, 1000, size=(spots, 2))
        lay.st(sid).parent.mkdir(parents=True, exist_ok=True)
        a.write_h5ad(lay.st(sid))
        lay.patches(sid).parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(lay.patches(sid), "w") as f:
            f["img"] = np.zeros((spots, 2, 2, 3), np.uint8)
            f["coords"] = np.zeros((spots, 2), np.int64)
            f["barcode"] = bc.astype("S")
        upsert_metadata_row(root, {"id": sid, "organ": "Breast", "patient": patient, "st_technology": "ST"})
        out[sid] = (bc, z)
    return out


@pytest.mark.slow
def test_her2st_hest1k_lopo_manifest(tmp_path, monkeypatch):
    """The shipped manifest (HEST-1k's her2st, leave-one-patient-out) runs on a root with those ids."""
    from spade_st.train.config import BUILTIN

    truth = _her2st_hest_root(tmp_path / "hest")
    rng = np.random.default_rng(1)
    for sid, (bc, z) in truth.items():
        good = np.hstack([z + 0.1 * rng.normal(size=z.shape), rng.normal(size=(len(z), 5))])
        keep = slice(2, None) if sid == "SPA130" else slice(None)  # a source without two spots: not evaluated
        write_features(tmp_path / "good" / f"{sid}.h5", FeatureSet(features=good[keep], barcode=bc[keep]))
        order = rng.permutation(len(z))  # rows in another order: matched by barcode
        write_features(
            tmp_path / "noise" / f"{sid}.h5",
            FeatureSet(features=rng.normal(size=(len(z), 8))[order], barcode=bc[order]),
        )
    monkeypatch.setenv("HEST_ROOT", str(tmp_path / "hest"))
    monkeypatch.setenv("FEATURES", str(tmp_path / "good"))
    monkeypatch.setenv("EMBEDDINGS", str(tmp_path / "noise"))
    manifest = BUILTIN / "tasks" / "her2st_hest1k_lopo.yaml"
    assert main(["evaluate", str(manifest), "--out", str(tmp_path / "res")]) == 0
    long = pd.read_csv(tmp_path / "res" / "results_long.csv")
    assert sorted(long["fold"].unique()) == [f"patient Patient {p}" for p in "ABCDEFGH"]  # 8 patients, one fold each
    assert set(zip(long.probe, long.target, long.metric, strict=True)) == {
        (p, t, "mean_pearson") for p in ("hest_ridge", "ridge_cv") for t in ("log1p", "cp10k")
    }
    mean = long.groupby(["source", "probe", "target"])["value"].mean().unstack([1, 2])
    assert (mean.loc["raw"] > 0.4).all() and (mean.loc["spade"].abs() < 0.15).all(), mean
    monkeypatch.delenv("EMBEDDINGS")
    assert main(["evaluate", str(manifest), "--out", str(tmp_path / "res2")]) == 1


def test_gene_task_refuses_rows_it_cannot_match(tmp_path):
    truth = _her2st_hest_root(tmp_path / "hest", spots=10)
    sid = "SPA119"
    bc, z = truth[sid]
    task = {"name": "t", "type": "gene_expression", "data": "hest", "samples": [sid, "SPA120"], "sources": {"x": "f"}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(task))
    write_features(tmp_path / "f" / "SPA120.h5", FeatureSet(features=truth["SPA120"][1], barcode=truth["SPA120"][0]))
    for bad, needle in (
        (None, "no barcodes"),
        (np.r_[bc[:-1], bc[:1]], "duplicated"),
        (np.r_[bc[:-1], ["zz"]], "not spots"),
    ):
        write_features(tmp_path / "f" / f"{sid}.h5", FeatureSet(features=z, barcode=bad))
        with pytest.raises(SpadeInputError, match=needle):
            run_task(tmp_path / "t.yaml", tmp_path / "res")
