"""The leakage guard of ``spade-st evaluate``: a source whose model trained on a scored sample or patient is refused."""

from __future__ import annotations

import pandas as pd
import pytest

from spade_st.cli import main
from spade_st.eval.leakage import overlap

from conftest import extract_cli


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """Synthetic root (patients P0-P2, two samples each), a model with SYN04 + SYN05 (patient P2) held out."""
    from spade_st.datasets import synthetic

    base = tmp_path_factory.mktemp("leak")
    root = base / "root"
    synthetic(out=root, samples=6, spots=40, genes=60, seed=7, progress=False)
    assert extract_cli(root, base / "feats", "random_cnn", "--device", "cpu") == 0
    feats = base / "feats" / "random_cnn"
    cfg = base / "cfg.yaml"
    cfg.write_text(
        "encoder: random_cnn\nn_top_genes: 10\nclustering: {k1: 2, n_experts: 2, backend: sklearn}\n"
        "optim: {epochs: 1, batch_size: 16}\n"
    )
    pt = ["pretrain", "--config", cfg, "--data", root, "--features", feats, "--out", base / "model"]
    assert main([str(a) for a in [*pt, "--exclude", "SYN04", "SYN05", "--device", "cpu"]]) == 0
    assert main(["embed", "--model", str(base / "model"), "--features", str(feats), "--out", str(base / "emb")]) == 0
    return root, feats, base / "emb"


def _task(tmp_path, root, feats, emb, samples, protocol="leave_one_patient_out"):
    path = tmp_path / "task.yaml"
    path.write_text(
        f"name: leak\ntype: gene_expression\ndata: {root}\nsamples: {samples}\nprotocol: {protocol}\n"
        f"targets: [log1p]\nprobes: [ridge_cv]\nn_genes: 10\nsources: {{raw: {feats}, spade: {emb}}}\n"
    )
    return path


def test_evaluate_refuses_a_model_scored_on_its_training_samples(embedded, tmp_path, capsys):
    root, feats, emb = embedded
    task = _task(tmp_path, root, feats, emb, ["SYN00", "SYN02", "SYN04"])
    out = tmp_path / "out"
    assert main(["evaluate", str(task), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "source 'spade'" in err and "SYN00: trained on it" in err
    assert "--allow-train-overlap" in err and not out.exists()  # refused before any work
    assert main(["evaluate", str(task), "--out", str(out), "--allow-train-overlap"]) == 0
    summary = pd.read_csv(out / "results.csv")
    assert summary.set_index("source")["in_sample"].to_dict() == {"raw": False, "spade": True}
    assert "**In-sample**: source `spade`'s model trained on SYN00, SYN02" in (out / "results.md").read_text()


def test_patients_are_compared_under_leave_one_patient_out():
    table = pd.DataFrame(
        {"organ": ["Breast"] * 3 + ["Bowel"], "patient": ["A", "A", "B", "A"]}, index=["s1", "s2", "s3", "s4"]
    )
    assert overlap(["s1"], ["s2", "s3", "s4"], table) == {"s2": "same patient (A) as training sample s1"}
    assert overlap(["s1"], ["s2", "s3"]) == {}  # no table: samples only
