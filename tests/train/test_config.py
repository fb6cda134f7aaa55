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
    cl, m, o = c.clustering, c.model, c.optim
    assert (c.encoder, c.n_top_genes, cl.k1, cl.n_experts, m.out_dim) == ("uni", 50, 16, 16, 256)
    assert (m.tau, m.tau_r, o.batch_size, o.epochs, o.lr, o.weight_decay) == (1.0, 0.1, 512, 100, 1e-4, 1e-2)
    assert (c.val_fraction, m.loss, m.dropout, m.output) == (0.1, "bleep", 0.1, "spade")


def test_flags_override_and_unknown_keys(tmp_path):
    assert load_config("her2st", epochs=3, **REQ).optim.epochs == 3
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


def test_sections_are_passed_whole_under_the_consumers_names():
    """Each section's fields are parameters of what it configures, by the same names (no copying by hand)."""
    import inspect
    from dataclasses import fields

    from spade_st.experts import SpadeConfig, TwoStageClustering
    from spade_st.train.config import SECTIONS

    params = set(inspect.signature(TwoStageClustering).parameters)
    assert {f.name for f in fields(SECTIONS["clustering"])} <= params
    assert {f.name for f in fields(SECTIONS["model"])} <= {f.name for f in fields(SpadeConfig)}
    names = PretrainConfig.option_names()
    assert len(names) == len(set(names))  # one name, one place: set(k1=...) is unambiguous


def test_options_by_name_land_in_their_section():
    c = PretrainConfig().set(k1="3", lr="1e-3", output="residual", epochs=2.0, n_top_genes=10)
    assert c.training_key()["experts"] == 16 and "clustering" not in c.training_key()  # flat: old runs resume
    assert (c.clustering.k1, c.optim.lr, c.model.output, c.optim.epochs, c.n_top_genes) == (3, 1e-3, "residual", 2, 10)
    assert c.get("lr") == 1e-3
    with pytest.raises(SpadeInputError, match="did you mean 'epochs'"):
        c.set(epoch=3)
    with pytest.raises(SpadeInputError, match="epochs must be an integer"):
        c.set(epochs="many")
    with pytest.raises(SpadeInputError, match="projection must be 'pca' or 'expression'"):
        PretrainConfig().set(projection="pls").validate(require=())


def test_nested_yaml_and_flat_yaml_of_older_files(tmp_path):
    nested = tmp_path / "nested.yaml"
    nested.write_text("encoder: uni\nclustering:\n  k1: 4\n  n_experts: 2\noptim:\n  lr: 1.0e-3\n")
    c = load_config(nested, **REQ)
    assert (c.encoder, c.clustering.k1, c.clustering.n_experts, c.optim.lr) == ("uni", 4, 2, 1e-3)
    flat = tmp_path / "flat.yaml"
    flat.write_text("encoder: uni\nk1: 4\nexperts: 2\nkmeans_backend: sklearn\nlr: 1.0e-3\n")
    with pytest.warns(FutureWarning, match="deprecated; write them under their section") as record:
        d = load_config(flat, **REQ)
    assert len(record) == 1 and "clustering: n_experts" in str(record[0].message)
    assert d.to_dict() == c.to_dict() | {"clustering": c.to_dict()["clustering"] | {"backend": "sklearn"}}
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  k1: 4\n")
    with pytest.raises(SpadeInputError, match="unknown option 'k1' under 'model:'"):
        load_config(bad, **REQ)
    bad.write_text("k1: 4\nclustering: {k1: 9}\n")
    with pytest.raises(SpadeInputError, match="k1 given both at the top and under its section"):
        load_config(bad, **REQ)
    bad.write_text("learning_rate: 0.1\n")
    with pytest.raises(SpadeInputError, match=f"^{bad}: unknown option 'learning_rate'"):
        load_config(bad, **REQ)
    with pytest.raises(SpadeInputError, match="did you mean 'n_experts'"):
        PretrainConfig().set(expert=3)
    with pytest.raises(AttributeError):
        PretrainConfig().epochs = 3  # an old flat attribute is refused, not silently ignored
    bad.write_text("optim: 3\n")
    with pytest.raises(SpadeInputError, match="'optim:' must be a mapping"):
        load_config(bad, **REQ)


def test_readme_config_example_loads_as_the_her2st_config(tmp_path):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"```yaml\n(encoder: .*?)```", readme, re.S)[1]
    (tmp_path / "c.yaml").write_text(block)
    got, her2st = load_config(tmp_path / "c.yaml", **REQ), load_config("her2st", **REQ)
    for name in (
        "encoder",
        "n_top_genes",
        "k1",
        "n_experts",
        "backend",
        "min_expert_spots",
        "out_dim",
        "output",
        "rotate",
    ):
        assert got.get(name) == her2st.get(name), name
    assert got.optim == her2st.optim


def test_checkpoint_key_is_the_one_earlier_versions_hashed():
    """A run interrupted under an earlier version resumes: the default config hashes as it did before the
    sections (a new option must enter ADDED_SINCE at the value that behaves as before)."""
    from spade_st.train.checkpoint import config_hash

    assert config_hash(PretrainConfig().training_key()) == "9b8dc89d9efc43f0"
    assert config_hash(PretrainConfig().set(projection="expression").training_key()) != "9b8dc89d9efc43f0"
    assert config_hash(PretrainConfig().set(rotate=True).training_key()) != "9b8dc89d9efc43f0"
