"""Step layout of the batched training loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spade_st.train.loop import step_arrays, step_mask, to_device


def test_step_mask_is_none_only_when_every_row_of_the_global_batch_is_valid():
    orders = [np.arange(10), np.arange(10, 14)]  # expert 1 has a short second batch
    _, mask = step_arrays(orders, 0, 4)
    assert step_mask(mask, "cpu") is None
    idx, mask = step_arrays(orders, 1, 4)
    assert idx[0].tolist() == [4, 5, 6, 7] and not mask[1].any()
    assert step_mask(mask, "cpu").tolist() == mask.tolist()
    # a rank's slice is all valid, another's is not: both get the tensor (they must agree on the loss's form)
    mask = np.array([[True, True, True, False]])
    assert step_mask(mask, "cpu", slice(0, 2)).tolist() == [[True, True]]
    assert step_mask(mask, "cpu", slice(2, 4)).tolist() == [[True, False]]


def test_to_device_converts_float16_blocks_to_float32():
    block = np.random.default_rng(0).random((2, 3, 5)).astype(np.float16)
    want = torch.from_numpy(block.astype(np.float32))
    assert torch.equal(to_device(block, "cpu"), want)
    if torch.cuda.is_available():  # the block travels as float16 and is converted on the device
        got = to_device(block, "cuda")
        assert got.device.type == "cuda" and torch.equal(got.cpu(), want)


def test_read_rows_of_no_rows_keeps_the_width(tmp_path):
    """A step whose active experts have all stopped early reads no rows: an empty (0, B, cols) batch."""
    from spade_st.train.loop import read_rows
    from spade_st.train.store import RowFile

    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.save(tmp_path / "x.npy", x)
    for rows in (x, RowFile(tmp_path / "x.npy")):
        assert read_rows(rows, np.zeros((0, 128), np.int64)).shape == (0, 128, 2)
        np.testing.assert_array_equal(read_rows(rows, np.array([[1, 2], [3, 0]])), x[[[1, 2], [3, 0]]])


def _planted(n=240, d=12, g=8, seed=0):
    """Features and expression sharing a 3-d latent (plus noise), split into 2 experts' train/val rows."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    feats = (z @ rng.normal(size=(3, d)) + 0.3 * rng.normal(size=(n, d))).astype(np.float32)
    genes = (z @ rng.normal(size=(3, g)) + 0.3 * rng.normal(size=(n, g))).astype(np.float32)
    rows = rng.permutation(n)
    tr = [np.sort(rows[:100]), np.sort(rows[100:200])]
    va = [np.sort(rows[200:220]), np.sort(rows[220:])]
    return feats, genes, tr, va


def _model(d=12, g=8, seed=0):
    from spade_st.experts import SpadeConfig, SpadeModel

    cfg = SpadeConfig(encoder="test", feature_dim=d, genes=[f"G{i}" for i in range(g)], n_experts=2, k1=2, out_dim=16)
    torch.manual_seed(seed)
    model = SpadeModel(cfg, np.eye(2, d, dtype=np.float32), [0, 1])
    gen = torch.Generator().manual_seed(seed)
    model.image_heads.reset_parameters(gen)
    model.gene_heads.reset_parameters(gen)
    return model


def _trainer(model, epochs=6, **kw):
    from spade_st.train.config import OptimConfig
    from spade_st.train.loop import Trainer

    optim = OptimConfig(lr=3e-3, epochs=epochs, batch_size=32, early_stop=kw.pop("early_stop", None))
    return Trainer(model, optim, seed=1, **kw)


def test_trainer_on_arrays_learns_and_keeps_the_best_epoch_per_expert():
    feats, genes, tr, va = _planted()
    model = _model()
    t = _trainer(model).fit(feats, genes, tr, va)
    h = t.history_
    assert len(h) == 6 * 2 and list(h.columns) == ["epoch", "expert", "train_loss", "val_loss", "lr"]
    first, best = h[h.epoch == 0].val_loss.to_numpy(), h.groupby("expert").val_loss.min().to_numpy()
    assert (best < first - 0.05).all(), h  # the planted pairing is learnt
    np.testing.assert_array_equal(t.state_["best_val"], best)
    np.testing.assert_array_equal(t.state_["best_epoch"], h.loc[h.groupby("expert").val_loss.idxmin(), "epoch"])
    for k, v in model.named_parameters():  # the model ends holding the best snapshot, not the last epoch
        torch.testing.assert_close(v.detach(), t.state_["best_params"][k], rtol=0, atol=0)


def test_trainer_early_stop_freezes_an_expert(monkeypatch):
    """Scripted validation losses: expert 0 peaks at epoch 1 and stops after 2 epochs without a better one
    (a later, lower loss no longer counts); expert 1 improves every epoch and trains to the end."""
    import spade_st.train.loop as loop

    script = iter([[1.0, 1.0], [0.9, 0.9], [0.95, 0.8], [0.97, 0.7], [0.5, 0.6], [0.4, 0.5]])
    monkeypatch.setattr(loop, "validation_losses", lambda *a, **k: np.array(next(script)))
    feats, genes, tr, va = _planted()
    model = _model()
    t = _trainer(model, epochs=6, early_stop=2).fit(feats, genes, tr, va)
    assert t.state_["stopped"].tolist() == [True, False]
    assert t.state_["best_epoch"].tolist() == [1, 5] and t.state_["best_val"].tolist() == [0.9, 0.5]
    h = t.history_.set_index(["expert", "epoch"])
    assert (h.loc[0].loc[4:, "train_loss"] == 0).all()  # no steps once stopped
    assert (h.loc[1, "train_loss"] > 0).all()
    for k, v in model.named_parameters():
        torch.testing.assert_close(v.detach(), t.state_["best_params"][k], rtol=0, atol=0)


def test_trainer_resumes_from_its_checkpoint_bit_identical(tmp_path, monkeypatch):
    import spade_st._fault as fault

    feats, genes, tr, va = _planted()
    whole = _trainer(_model(), checkpoint_dir=tmp_path / "a").fit(feats, genes, tr, va)

    def die(point):
        if point == "epoch3-step0":
            raise KeyboardInterrupt  # stands in for a kill after epoch 2's checkpoint

    monkeypatch.setattr(fault, "maybe_die", die)
    with pytest.raises(KeyboardInterrupt):
        _trainer(_model(), checkpoint_dir=tmp_path / "b").fit(feats, genes, tr, va)
    monkeypatch.undo()
    resumed = _trainer(_model(seed=5), checkpoint_dir=tmp_path / "b").fit(feats, genes, tr, va)  # other init: restored
    assert resumed.history_.equals(whole.history_)
    for k, v in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(ValueError, match="different training settings"):
        _trainer(_model(), checkpoint_dir=tmp_path / "b", checkpoint_key={"lr": 1}).fit(feats, genes, tr, va)
