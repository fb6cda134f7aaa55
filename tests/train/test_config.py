"""Built-in configs load, and the paper's config holds the paper's values."""

from __future__ import annotations

import pytest

from spade_st._validation import SpadeInputError
from spade_st.train.config import PretrainConfig, builtin_configs, load_config

REQ = {"data": "d", "features": "f", "out": "o"}


def test_builtin_configs_load():
    assert {"demo", "her2st", "spade_hest1k_uni"} <= set(builtin_configs())
    for name in builtin_configs():
        load_config(name, **REQ)


def test_paper_config_values():
    c = load_config("spade_hest1k_uni", **REQ)
    assert (c.encoder, c.n_top_genes, c.k1, c.experts, c.out_dim) == ("uni", 50, 16, 16, 256)
    assert (c.tau, c.tau_r, c.batch_size, c.epochs, c.lr, c.weight_decay) == (1.0, 0.1, 512, 100, 1e-4, 1e-2)
    assert (c.val_fraction, c.loss, c.dropout) == (0.1, "bleep", 0.1)


def test_flags_override_and_unknown_keys(tmp_path):
    assert load_config("her2st", epochs=3, **REQ).epochs == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("k1: 4\nlearning_rate: 0.1\n")
    with pytest.raises(SpadeInputError, match="unknown option"):
        load_config(bad, **REQ)
    with pytest.raises(SpadeInputError, match="--data"):
        load_config("demo")
    with pytest.raises(SpadeInputError, match="loss must be"):
        load_config("demo", loss="mse", **REQ)


def test_train_needs_a_prepared_folder(tmp_path):
    from spade_st.train.pretrain import train

    with pytest.raises(SpadeInputError, match="not a prepared pretraining folder"):
        train(PretrainConfig(out=tmp_path, progress=False))
