"""``spade-st finetune``: what trains, the cached prefix, the permuted control, reproducibility, the folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from spade_st.cli import main
from spade_st.encoders import create_encoder
from spade_st.encoders.partial import UNIT_RULES, SplitNet
from spade_st.train import finetune as ft_mod
from spade_st.train.finetune import _Net, _setup, finetune
from spade_st.train.finetune_config import FinetuneConfig
from spade_st.train.finetune_data import VIEW_SETS, build_spots, dihedral, permutation_within


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """3 synthetic samples x 16 spots (one organ each: spatial-block validation, as pretrain splits it)."""
    from spade_st.datasets import synthetic

    root = tmp_path_factory.mktemp("ftroot") / "root"
    synthetic(out=root, samples=3, spots=16, genes=40, seed=3, progress=False)
    return root


def _cfg(root, out, **kw) -> FinetuneConfig:
    base = dict(data=root, out=out, encoder="random_cnn", epochs=2, batch_size=8, views=2, n_top_genes=8)
    return FinetuneConfig(**(base | dict(out_dim=16, progress=False, val_fraction=0.25) | kw))


def _sd(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _digest(folder: Path) -> dict[str, str]:
    names = ("model.safetensors", "config.json", "history.csv")
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}


@pytest.mark.parametrize("name", sorted(UNIT_RULES))
def test_blocks_compose_to_the_whole_backbone(name):
    from spade_st.encoders.registry import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone(name).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for n_train in (1, 3):
            np.testing.assert_allclose(SplitNet(name, backbone, n_train)(x), backbone(x), atol=1e-5, rtol=0)


def test_trained_blocks_change_and_frozen_ones_do_not(tiny_root, tmp_path):
    import spade_st

    kw = dict(epochs=2, batch_size=8, views=2, n_top_genes=8, out_dim=16, progress=False, val_fraction=0.25)
    out = spade_st.tl.finetune(tiny_root, "random_cnn", out=tmp_path / "ft", train_blocks=2, encoder_lr=1e-2, **kw)
    base = create_encoder("random_cnn", device="cpu").backbone
    trained = set(SplitNet("random_cnn", base, 2).trained_parameters())
    assert trained == {f"body.{i}.{p}" for i in (6, 7, 9, 10) for p in ("weight", "bias")}
    after = _sd(out / "model.safetensors")
    before = base.state_dict()
    assert set(after) == set(before)
    for k, v in before.items():
        if k in trained:
            assert not torch.equal(after[k], v), f"trained {k} did not change"
        else:
            assert torch.equal(after[k], v), f"frozen {k} changed"  # incl. batch-norm running statistics


def test_cached_prefix_gives_the_whole_networks_features(tiny_root, tmp_path):
    cfg = _cfg(tiny_root, tmp_path / "c", encoder="efficientnet_lite0", train_blocks=3, views=8)
    split, panel, spots = _setup(cfg)
    one = type(split)(train=[split.train[0]], val=[], seed=split.seed)  # one sample keeps it quick
    spots = build_spots([s for s in __import__("spade_st").read_hest(tiny_root)], one, panel)
    rows = np.arange(6)
    views = np.array([0, 1, 2, 3, 5, 7])
    cached = _Net(cfg, torch.device("cpu"))
    cached.prepare(spots, progress=False)
    whole = _Net(
        _cfg(tiny_root, tmp_path / "w", encoder="efficientnet_lite0", train_blocks=3, views=8, cache_prefix=False),
        "cpu",
    )
    whole.prepare(spots, progress=False)
    with torch.no_grad():
        a = cached.features(rows, views, None).numpy()
        b = whole.features(rows, views, None).numpy()
    enc = create_encoder("efficientnet_lite0", device="cpu")
    img = whole.reader(rows)
    full = np.stack([enc(dihedral(img[i : i + 1], VIEW_SETS[8][v]))[0].numpy() for i, v in enumerate(views)])
    np.testing.assert_allclose(a, full, atol=1e-5, rtol=0)
    np.testing.assert_allclose(b, full, atol=1e-5, rtol=0)
    assert not np.allclose(full[1], enc(img[1:2])[0].numpy(), atol=1e-3)  # the views are really other views


def test_permuted_control_permutes_within_each_section(tiny_root, tmp_path):
    cfg = _cfg(tiny_root, tmp_path / "p")
    split, panel, real = _setup(cfg)
    import spade_st

    perm = build_spots(spade_st.read_hest(tiny_root), split, panel, permute=True, seed=cfg.seed)
    assert not np.array_equal(perm.expression, real.expression)
    for si in range(len(real.sample_ids)):
        rows = real.section == si
        a, b = real.expression[rows], perm.expression[rows]
        assert not np.array_equal(a, b), "a section was left in place"
        np.testing.assert_array_equal(a[np.lexsort(a.T)], b[np.lexsort(b.T)])  # the same rows, reordered
    labels = np.array(list("aaabbbbcc"))
    order = permutation_within(labels, 0)
    assert (labels[order] == labels).all() and sorted(order) == list(range(len(labels)))


def test_folder_is_byte_reproducible_and_resumes_to_the_same_bytes(tiny_root, tmp_path, monkeypatch):
    a = finetune(_cfg(tiny_root, tmp_path / "a", epochs=3, early_stop=0))
    b = finetune(_cfg(tiny_root, tmp_path / "b", epochs=3, early_stop=0))
    assert _digest(a) == _digest(b)
    real_save = ft_mod.save_state

    def save_then_die(folder, params, obj, opt, state, key):
        real_save(folder, params, obj, opt, state, key)
        if state["epoch"] == 1:
            raise KeyboardInterrupt  # a kill right after the first epoch's checkpoint

    monkeypatch.setattr(ft_mod, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        finetune(_cfg(tiny_root, tmp_path / "k", epochs=3, early_stop=0))
    monkeypatch.setattr(ft_mod, "save_state", real_save)
    assert not (tmp_path / "k" / "model.safetensors").exists()
    assert _digest(finetune(_cfg(tiny_root, tmp_path / "k", epochs=3, early_stop=0))) == _digest(a)
    other = finetune(_cfg(tiny_root, tmp_path / "s", epochs=3, early_stop=0, seed=7))
    assert _digest(other)["model.safetensors"] != _digest(a)["model.safetensors"]


def test_extract_finetuned_folder_end_to_end(tiny_root, tmp_path):
    import h5py

    import spade_st

    out = tmp_path / "ft"
    args = ["finetune", "--data", tiny_root, "--encoder", "random_cnn", "--out", out, "--epochs", "1", "--views", "2"]
    assert main([str(a) for a in args] + ["--train-blocks", "1"]) == 0
    assert (
        main(["extract", "--data", str(tiny_root), "--encoder", f"finetuned:{out}", "--out", str(tmp_path / "f")]) == 0
    )
    enc = create_encoder(f"finetuned:{out}", device="cpu")
    files = sorted((tmp_path / "f" / enc.name).glob("*.h5"))
    assert len(files) == 3 and enc.name.startswith("random_cnn-ft-")
    sample = spade_st.read_hest(tiny_root)[0]
    with h5py.File(files[0], "r") as f:
        feats = f["features"][()]
        assert f.attrs["encoder"] == enc.name and f.attrs["weights_sha256"] == enc.weights_sha256
    adata = spade_st.tl.extract(sample, f"finetuned:{out}", progress=False)
    np.testing.assert_allclose(adata.obsm[f"X_{enc.name}"], feats, atol=1e-6)
    frozen = create_encoder("random_cnn", device="cpu")(sample.patches.read(0, 4)).numpy()
    assert not np.allclose(frozen, feats[:4], atol=1e-4)  # the folder's weights, not the base encoder's
    assert main(["extract", "--data", str(tiny_root), "--encoder", "finetuned:" + str(tmp_path), "--out", "x"]) == 1


def test_lora_on_a_random_tiny_vit_changes_only_lora(tiny_root, tmp_path):
    from safetensors.torch import save_file

    from spade_st.encoders.lora import apply_lora, lora_parameters, merge_lora
    from spade_st.encoders.registry import build_backbone

    arch = {"depth": 2, "embed_dim": 32, "num_heads": 2, "init_values": None}
    vit = build_backbone("uni", **arch)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    base = {k: v.clone() for k, v in vit.state_dict().items()}
    names = apply_lora(vit, rank=4, alpha=8, seed=0)
    trainable = {n for n, p in vit.named_parameters() if p.requires_grad}
    assert trainable == set(lora_parameters(vit)) and len(names) == 8  # qkv, proj, fc1, fc2 of two blocks
    cfg = _cfg(tiny_root, tmp_path / "lora", encoder="uni", weights=tmp_path / "vit.safetensors", arch=arch)
    out = finetune(FinetuneConfig(**(vars(cfg) | {"method": "lora", "lora_rank": 4, "encoder_lr": 1e-2})))
    after = _sd(out / "model.safetensors")
    adapted = {f"{n}.weight" for n in names}
    for k, v in base.items():
        assert torch.equal(after[k], v) != (k in adapted), k  # exactly the adapted weights changed
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        vit.blocks[0].attn.qkv.lora_b.normal_()
        y = vit(x)
        np.testing.assert_allclose(merge_lora(vit)(x).numpy(), y.numpy(), atol=1e-5)
    enc = create_encoder(f"finetuned:{out}", device="cpu")
    assert enc.embed_dim == 32 and enc(np.zeros((1, 224, 224, 3), np.uint8)).shape == (1, 32)


def test_history_reads_the_pairing_gap_of_the_validation_loss(tiny_root, tmp_path, monkeypatch):
    """Each epoch's validation loss beside the loss with expression paired to other validation spots; the gap
    is their difference, and it is zero when the expression rows are all alike (pairing can say nothing)."""
    import json

    import pandas as pd

    out = finetune(_cfg(tiny_root, tmp_path / "g", epochs=2, early_stop=0, encoder_lr=1e-2))
    h = pd.read_csv(out / "history.csv")
    assert list(h.columns) == ["epoch", "train_loss", "val_loss", "val_loss_shuffled", "val_pairing_gap"]
    np.testing.assert_allclose(h.val_pairing_gap, h.val_loss_shuffled - h.val_loss, atol=1e-12)
    assert (h.val_pairing_gap.abs() > 1e-6).all()  # the shuffled loss really pairs images with other spots
    best = json.loads((out / "config.json").read_text())
    assert best["best_val_pairing_gap"] == pytest.approx(h.val_pairing_gap[best["best_epoch"]])
    cfg = _cfg(tiny_root, tmp_path / "same")
    _, _, spots = _setup(cfg)
    spots.expression[:] = spots.expression[spots.val[0]]  # every spot with one spot's expression
    net = _Net(cfg, torch.device("cpu"))
    net.prepare(spots, progress=False)
    dim = net.features(spots.val[:2], np.zeros(2, np.int64), None).shape[1]
    obj = ft_mod.Objective(dim, spots.expression.shape[1], cfg, torch.Generator().manual_seed(0))
    val, shuffled = ft_mod._val_loss(net, obj, spots, cfg.batch_size, cfg.seed)
    assert np.isfinite(val) and shuffled == pytest.approx(val, abs=1e-6)


def test_pairing_gap_re_pairs_only_within_the_batch_and_section():
    labels = np.array(["a"] * 5 + ["b"] * 4 + ["c"] * 3)
    rows = np.array([2, 3, 4, 5, 6, 7])  # a batch straddling sections a and b
    swapped = ft_mod.swapped_rows(rows, labels, 49)
    assert sorted(swapped) == sorted(rows)  # the batch keeps its expression rows
    assert (labels[swapped] == labels[rows]).all()  # each image gets a spot of its own section
    assert (swapped != rows).sum() >= 4  # and mostly another spot's
    np.testing.assert_array_equal(ft_mod.swapped_rows(rows, labels, 49), swapped)  # fixed across epochs


def test_infonce_objective_is_clips_loss_on_the_heads(tiny_root, tmp_path):
    """``loss: infonce`` trains on CLIP's loss with a learnable temperature (not BLEEP's), from the CLI flag."""
    import json

    from spade_st.experts.loss import bleep_loss, infonce_loss

    cfg = _cfg(tiny_root, tmp_path / "i", loss="infonce")
    obj = ft_mod.Objective(12, 5, cfg, torch.Generator().manual_seed(0)).eval()
    feats, expr = torch.randn(6, 12), torch.rand(6, 5)
    with torch.no_grad():
        z, s = obj.image(feats[None]), obj.gene(expr[None])
        assert float(obj.logit_scale.exp()) == pytest.approx(1 / 0.07)
        assert float(obj(feats, expr)) == pytest.approx(float(infonce_loss(z, s, obj.logit_scale).mean()))
        assert float(obj(feats, expr)) != pytest.approx(float(bleep_loss(z, s).mean()))
    out = tmp_path / "ft"
    args = ["finetune", "--data", tiny_root, "--encoder", "random_cnn", "--out", out, "--epochs", "1", "--views", "2"]
    assert main([str(a) for a in args] + ["--train-blocks", "1", "--loss", "infonce"]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["loss"] == "infonce"
    assert "loss" not in FinetuneConfig().record()  # BLEEP folders keep the key they had before the option
