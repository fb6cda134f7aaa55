"""Bad configuration through ``spade-st`` in a fresh process: exit 1, one line, no traceback, the fix named,
and nothing written."""

from __future__ import annotations

import pytest

from conftest import run_cli


@pytest.mark.parametrize(
    ("yaml_text", "extra", "needles"),
    [
        ("clustering:\n  n_experts: four\n", [], ["n_experts must be an integer", "'four'"]),
        ("optim:\n  lrr: 0.001\n", [], ["unknown option 'lrr' under 'optim:'", "did you mean 'lr'"]),
        ("optim:\n  epochs: 2.5\n", [], ["epochs must be an integer"]),
        ("model:\n  shared_gene_head: maybe\n", [], ["shared_gene_head must be true or false"]),
        ("model:\n  output: both\n", [], ["output must be 'spade', 'residual' or 'concat'"]),
        ("encoder: random_cnn\nclustering: {k1: 3, n_experts: 7}\n", [], ["cannot form 7 experts", "raise --k1"]),
        (None, ["--config", "her2sd"], ["did you mean 'her2st'", "built-in: demo, her2st"]),
    ],
)
def test_config_errors_are_one_line_and_write_nothing(synthetic_root, tmp_path, yaml_text, extra, needles):
    out = tmp_path / "model"
    args = ["pretrain", "--data", synthetic_root, "--features", tmp_path / "feats", "--out", out, *extra]
    if yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        args += ["--config", tmp_path / "c.yaml"]
    r = run_cli(args)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists()


def test_flat_config_of_an_older_version_warns_in_one_line(synthetic_root, tmp_path):
    """Flat keys (no sections) still load, with one warning line saying where they go now."""
    (tmp_path / "c.yaml").write_text("k1: 3\nexperts: 7\nencoder: random_cnn\n")
    r = run_cli(["pretrain", "--data", synthetic_root, "--features", tmp_path / "f", "--out", tmp_path / "m",
                 "--config", tmp_path / "c.yaml"])  # fmt: skip
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 2, r.stderr  # the deprecation line, then the config's own error
    assert lines[0].startswith("spade-st: warning:") and "clustering: n_experts" in lines[0]
    assert "cannot form 7 experts" in lines[1]


def test_encoder_name_did_you_mean(synthetic_root, tmp_path):
    r = run_cli(["extract", "--data", synthetic_root, "--encoder", "UNI", "--out", tmp_path / "f"])
    assert r.returncode == 1 and "did you mean 'uni'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "f").exists()


def test_debug_flag_anywhere_shows_the_traceback(tmp_path):
    r = run_cli(["check", "--data", tmp_path / "missing", "--debug"])
    assert r.returncode != 0 and "Traceback" in r.stderr and "does not exist" in r.stderr
    r = run_cli(["check", "--data", tmp_path / "missing"])
    assert r.returncode == 1 and "Traceback" not in r.stderr


def test_features_parent_folder_names_the_encoder_folder(synthetic_root, tmp_path):
    (tmp_path / "feats" / "efficientnet_lite0").mkdir(parents=True)
    (tmp_path / "feats" / "efficientnet_lite0" / "SYN00.h5").write_bytes(b"")
    out = tmp_path / "model"
    r = run_cli(["pretrain", "--data", synthetic_root, "--features", tmp_path / "feats", "--out", out])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "one folder per encoder (efficientnet_lite0)" in lines[0] and "feats/efficientnet_lite0" in lines[0]
    assert not out.exists()


def test_embed_missing_model_folder_says_it_does_not_exist(tmp_path):
    out = tmp_path / "emb"
    r = run_cli(["embed", "--model", tmp_path / "missing", "--features", tmp_path, "--out", out])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "model folder" in lines[0] and "does not exist" in lines[0] and "spade-st pretrain" in lines[0]
    assert not out.exists()
