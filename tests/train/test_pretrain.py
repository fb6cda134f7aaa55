"""``spade-st pretrain`` / ``embed`` end to end on synthetic data: artefact, reload, exact embeddings, resume."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from spade_st.cli import main
from spade_st.eval.gene_folds import load_section
from spade_st.experts import SpadeModel
from spade_st.genes import LIBRARY_SIZE
from spade_st.io import read_hest
from spade_st.io.features import read_features

from conftest import extract_cli, run_cli


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    from spade_st.datasets import synthetic

    root = tmp_path_factory.mktemp("pt") / "root"
    synthetic(out=root, samples=8, spots=40, genes=60, seed=3, progress=False)
    out = root.parent / "feats"
    assert extract_cli(root, out, "random_cnn", "--device", "cpu") == 0
    return root, out / "random_cnn"


def _args(root, f, out, *extra):
    return [
        "pretrain",
        "--data",
        str(root),
        "--features",
        str(f),
        "--out",
        str(out),
        "--k1",
        "3",
        "--experts",
        "3",
        "--epochs",
        "4",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        *extra,
    ]


def test_pretrain_save_reload_embed(feats, tmp_path):
    root, f = feats
    out = tmp_path / "model"
    assert main(_args(root, f, out)) == 0
    for name in (
        "model.safetensors",
        "config.json",
        "split.json",
        "panel.json",
        "clustering.npz",
        "clustering_qc.csv",
        "history.csv",
        "pretrain_config.json",
    ):
        assert (out / name).is_file(), name
    model = SpadeModel.from_pretrained(out)
    cfg = model.config
    assert cfg.encoder == "random_cnn" and cfg.feature_dim == 64 and cfg.n_experts == 3 and cfg.tau_r == 0.1
    # every organ has < 3 patients: all samples train, spatial blocks of each validate (saved with the reason)
    assert cfg.split["val"] == [] and sorted(cfg.split["val_blocks"]) == sorted(cfg.split["train"])
    assert all("spatial blocks" in r for r in cfg.split["reasons"].values())
    samples = {s.id: s for s in read_hest(root)}
    hist = pd.read_csv(out / "history.csv")
    assert len(hist) == 4 * 3 and np.isfinite(hist["train_loss"]).all() and np.isfinite(hist["val_loss"]).any()
    assert sum(cfg.train["val_spots"]) > 0
    # embed through the CLI = in-memory embeddings, exactly
    emb = tmp_path / "emb"
    assert (
        main(["embed", "--model", str(out), "--features", str(f), "--out", str(emb), "--data", str(root), "--adata"])
        == 0
    )
    for sid in samples:
        fs = read_features(f / f"{sid}.h5")
        got = read_features(emb / f"{sid}.h5")
        np.testing.assert_array_equal(got.features, model.embed(fs.features))
        assert got.features.shape == (40, 256) and got.arrays["expert_weights"].shape == (40, 3)
        np.testing.assert_allclose(got.arrays["expert_weights"].sum(1), 1, rtol=1e-5)
        assert list(got.barcode) == list(fs.barcode)
        a = ad.read_h5ad(emb / f"{sid}.h5ad")  # a copy beside the embeddings; the data root is not written
        np.testing.assert_array_equal(a.obsm["X_spade"], got.features)
        assert "X_spade" not in read_hest(root, ids=[sid])[0].adata.obsm
    # the expression head: ridge weights on the embedding + prototypes, genes = the panel
    assert model.predictor is not None and model.predictor.weight.shape == (256, len(model.predictor.genes))
    assert model.predictor.genes == [g for g in cfg.genes if g != LIBRARY_SIZE]
    assert model.predictor.info["samples"] == sorted(cfg.split["train"])
    # the best epoch per expert is what was saved
    best = load_file(str(out / "checkpoints" / "last.safetensors"))
    final = load_file(str(out / "model.safetensors"))
    for k in ("image_heads.w1", "gene_heads.w2"):
        np.testing.assert_array_equal(final[k].numpy(), best[f"best.{k}"].numpy())


@pytest.fixture(scope="module")
def real_feats(feats):
    """The same synthetic root with the real default encoder (features that carry the tissue signal)."""
    root, _ = feats
    out = root.parent / "feats_eff"
    assert extract_cli(root, out) == 0
    return root, out / "efficientnet_lite0"


def test_training_learns_cross_modal_retrieval(real_feats, tmp_path):
    """Trained experts retrieve, for each spot's image, gene embeddings of the same tissue region."""
    root, f = real_feats
    out = tmp_path / "m"
    # later flags override _args' defaults (argparse keeps the last value)
    samples = read_hest(root)
    held = [s.id for s in samples if s.patient == samples[-1].patient]  # the last patient
    extra = ("--k1", "2", "--experts", "2", "--epochs", "40", "--batch-size", "32", "--lr", "1e-3", "--exclude", *held)
    assert main(_args(root, f, out, *extra)) == 0
    model = SpadeModel.from_pretrained(out)
    assert model.config.split["excluded"] == held

    panel = model.gene_panel()
    hits, chance = [], []
    for s in read_hest(root, ids=held):  # samples held out of pretraining only
        sec = load_section(s, f / f"{s.id}.h5", targets=())  # rows matched by barcode
        x = sec.features
        zi = model.embed(x)
        zg = model.embed_genes(panel.transform(sec.adata), features=x)
        lab = sec.adata.obs["label"].astype(str).to_numpy()
        nn = (zi @ zg.T).argmax(1)
        hits.append(np.mean(lab[nn] == lab))
        p = pd.Series(lab).value_counts(normalize=True)
        chance.append(float((p**2).sum()))
    assert np.mean(hits) > np.mean(chance) + 0.15, (hits, chance)


@pytest.fixture(scope="module")
def uninterrupted(feats, tmp_path_factory):
    """The reference run the killed-and-resumed runs must equal byte for byte (made once)."""
    root, f = feats
    ref = tmp_path_factory.mktemp("ref") / "ref"
    r = run_cli(_args(root, f, ref))
    assert r.returncode == 0, r.stderr[-1500:]
    return ref


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["epoch2-step1", "checkpoint3"])  # mid-epoch; between checkpoint writes
def test_killed_pretrain_resumes_bit_identical(feats, uninterrupted, tmp_path, fault):
    root, f = feats
    ref = uninterrupted
    out = tmp_path / "killed"
    r = run_cli(_args(root, f, out), {"SPADE_ST_FAULT": fault})
    assert r.returncode == -9  # SIGKILL
    assert not (out / "model.safetensors").exists()
    r = run_cli(_args(root, f, out))
    assert r.returncode == 0, r.stderr[-1500:]
    if fault == "epoch2-step1":  # epochs 0 and 1 were checkpointed
        assert "resuming from epoch 2 of 4" in r.stderr
    a, b = load_file(str(ref / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k].numpy(), b[k].numpy()), k
    # the artefact itself is byte-identical (its safetensors header too), not only its tensors
    assert (ref / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    pd.testing.assert_frame_equal(pd.read_csv(ref / "history.csv"), pd.read_csv(out / "history.csv"))


def test_changed_settings_refuse_resume(feats, tmp_path, capsys):
    root, f = feats
    out = tmp_path / "m"
    assert main(_args(root, f, out, "--epochs", "2")) == 0
    assert main(_args(root, f, out, "--epochs", "2", "--seed", "7")) == 1
    assert "different" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_pretrain_two_ranks(feats, tmp_path):
    """`torchrun --nproc_per_node 2 spade-st pretrain` trains one model (rank 0 writes it)."""
    root, f = feats
    out = tmp_path / "ddp"
    r = run_cli(_args(root, f, out, "--epochs", "2"), nproc=2, port=29523)
    assert r.returncode == 0, r.stderr[-2000:]
    model = SpadeModel.from_pretrained(out)
    assert model.config.train["world_size"] == 2
    assert len(pd.read_csv(out / "history.csv")) == 2 * 3


@pytest.mark.slow
def test_small_cohort_options_train_and_resume_byte_identical(feats, tmp_path):
    """Residual output, one shared gene head, smoothed gene input and expert sizing: trained end to end, and a
    run killed mid-training resumes to the same bytes (the shared head's optimiser and best-so-far included)."""
    root, f = feats
    extra = ("--output", "residual", "--shared-gene-head", "--gene-smoothing", "1.5", "--min-expert-spots", "60")
    extra += ("--gene-library-size",)
    ref = tmp_path / "ref"
    r = run_cli(_args(root, f, ref, *extra))
    assert r.returncode == 0, r.stderr[-1500:]
    model = SpadeModel.from_pretrained(ref)
    cfg = model.config
    assert cfg.output == "residual" and cfg.shared_gene_head and model.gene_heads.n_experts == 1
    assert cfg.train["gene_smoothing"] == 1.5 and cfg.n_experts <= 3 and cfg.genes[-1] == LIBRARY_SIZE
    assert all(n >= 60 for n in cfg.train["train_spots"]) and (cfg.n_experts == 3 or "requested" in cfg.train["sizing"])
    x = read_features(f / f"{read_hest(root)[0].id}.h5").features
    assert model.embed(x).shape == (len(x), 256)
    assert not np.allclose(model.embed(x), model.project(torch.as_tensor(x)).numpy(), atol=1e-4)  # experts learned
    out = tmp_path / "killed"
    r = run_cli(_args(root, f, out, *extra), {"SPADE_ST_FAULT": "epoch2-step1"})
    assert r.returncode == -9
    r = run_cli(_args(root, f, out, *extra))
    assert r.returncode == 0, r.stderr[-1500:]
    assert (ref / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
