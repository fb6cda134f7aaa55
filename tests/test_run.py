"""``spade-st run``: one command from a root to a report, resumable, stages selectable; ``--dry-run`` on the real
HEST table."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from spade_st.cli import main
from spade_st.io.features import read_features

from conftest import HEST_TABLE, require

CONFIG = (
    "encoder: random_cnn\nn_top_genes: 10\nclustering: {k1: 2, n_experts: 2, backend: sklearn}\n"
    "optim: {epochs: 2, batch_size: 16}\n"
)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from spade_st.datasets import synthetic

    base = tmp_path_factory.mktemp("run")
    synthetic(out=base / "root", samples=6, spots=40, genes=60, seed=11, progress=False)
    (base / "cfg.yaml").write_text(CONFIG)
    return base


def _run(base, out, *extra):
    args = ["run", "--config", base / "cfg.yaml", "--data", base / "root", "--out", out, "--device", "cpu"]
    return main([str(a) for a in [*args, "--exclude", "SYN04", "SYN05", *extra]])


def test_run_goes_from_root_to_report_and_resumes_byte_identical(root, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(root, out) == 0
    assert (out / "report.html").is_file() and (out / "run.json").is_file()
    files = [out / "model" / "model.safetensors", *sorted((out / "embeddings").glob("*.h5"))]
    assert len(files) == 7  # the model + every sample's embeddings (the held-out ones too)
    before = {p.name: _sha(p) for p in files}
    capsys.readouterr()
    assert _run(root, out) == 0  # everything complete: reused, same bytes
    assert {p.name: _sha(p) for p in files} == before
    # stages in two commands give the same model as one
    split = tmp_path / "split"
    assert _run(root, split, "--until", "pretrain") == 0
    assert (split / "model" / "model.safetensors").is_file() and not (split / "embeddings").exists()
    assert _run(root, split, "--from", "embed") == 0
    assert _sha(split / "model" / "model.safetensors") == before["model.safetensors"]
    for p in files[1:]:  # the same embeddings (the files' bytes differ only by the folder they name)
        np.testing.assert_array_equal(read_features(split / "embeddings" / p.name).features, read_features(p).features)


def test_run_refuses_bad_stages_before_any_work(root, tmp_path, capsys):
    out = tmp_path / "bad"
    assert _run(root, out, "--from", "report", "--until", "extract") == 1
    assert "comes after --until extract" in capsys.readouterr().err and not out.exists()
    assert _run(root, out, "--tasks", tmp_path / "missing.yaml") == 1
    assert not out.exists()


def test_dry_run_on_a_root_holding_only_the_hest_table(tmp_path, capsys):
    data = tmp_path / "hest"
    data.mkdir()
    shutil.copy(require(HEST_TABLE), data / HEST_TABLE.name)
    out = tmp_path / "plan"
    args = ["run", "--config", "spade_hest1k_uni", "--data", str(data), "--out", str(out), "--dry-run"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "samples: 293 of 1229 kept" in text and "plan: 293 samples, 627,688 spots" in text
    assert "| Skin | 63 | 63178 |" in text and "240 centroids -> 16 experts" in text
    assert "uni: 123.1 GFLOP per patch" in text and "(assumed)" in text
    assert not out.exists()  # a dry run writes nothing
