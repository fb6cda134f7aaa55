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
    assert "skipped every tissue figure" not in capsys.readouterr().err  # the report found the data root
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


def test_run_records_each_stages_warnings_for_the_report(root, tmp_path, monkeypatch):
    import json
    import warnings

    from spade_st import run as run_mod
    from spade_st._validation import DataWarning

    extract = run_mod._extract

    def warns(*args):
        extract(*args)
        warnings.warn("a coarse image: patches upsampled 6.4x", DataWarning, stacklevel=1)

    monkeypatch.setattr(run_mod, "_extract", warns)
    out = tmp_path / "run"
    assert _run(root, out, "--until", "extract") == 0
    rows = json.loads((out / "warnings.json").read_text())
    assert {"stage": "extract", "category": "DataWarning", "message": "a coarse image: patches upsampled 6.4x"} in rows
    assert _run(root, out, "--until", "extract") == 0  # resumed: listed once, not twice
    assert json.loads((out / "warnings.json").read_text()) == rows


def test_record_warnings_shows_them_and_keeps_each_once(tmp_path):
    import warnings

    from spade_st._warnlog import read_warnings, record_warnings

    assert read_warnings(tmp_path) == []  # no file: nothing recorded
    shown = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *_a, **_k: shown.append(str(message))  # how they are shown
        with record_warnings(tmp_path, "embed") as caught:
            for _ in range(3):
                warnings.warn("same thing", UserWarning, stacklevel=1)
            warnings.warn("old API", DeprecationWarning, stacklevel=1)  # not a run's warning: not listed
    assert len(caught) == 4 and shown == ["same thing"] * 3 + ["old API"]  # still shown, each time
    assert read_warnings(tmp_path) == [{"stage": "embed", "category": "UserWarning", "message": "same thing"}]
    with record_warnings(None, "x"):  # no run folder: shown, recorded nowhere
        warnings.warn("elsewhere", UserWarning, stacklevel=1)
    assert len(read_warnings(tmp_path)) == 1


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


def _kill_args(root) -> list:
    args = ["run", "--config", root / "cfg.yaml", "--data", root / "root", "--device", "cpu"]
    return [*args, "--exclude", "SYN04", "SYN05", "--until", "pretrain"]


@pytest.fixture(scope="module")
def uninterrupted_run(root, tmp_path_factory):
    """The uninterrupted run the killed ones must equal (made once for both faults)."""
    from conftest import run_cli

    ref = tmp_path_factory.mktemp("ref") / "ref"
    r = run_cli([*_kill_args(root), "--out", ref], one_thread=False)
    assert r.returncode == 0, r.stderr[-1500:]
    return ref


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["write-SYN02", "epoch1-step0"])
def test_run_killed_mid_stage_resumes_to_the_same_model(root, uninterrupted_run, tmp_path, fault):
    """SIGKILL inside extraction (a feature file being written) or inside pretraining (a training step); the
    same command again finishes the run, and the model is byte-identical to an uninterrupted run's."""
    from conftest import run_cli

    args = _kill_args(root)
    out = tmp_path / "run"
    r = run_cli([*args, "--out", out], {"SPADE_ST_FAULT": fault}, one_thread=False)
    assert r.returncode == -9, r.stderr[-1500:]
    assert not (out / "model" / "model.safetensors").exists()  # nothing finished is claimed
    r = run_cli([*args, "--out", out], one_thread=False)
    assert r.returncode == 0, r.stderr[-1500:]
    ref = uninterrupted_run
    assert _sha(out / "model" / "model.safetensors") == _sha(ref / "model" / "model.safetensors")
    for f in sorted((ref / "features" / "random_cnn").glob("*.h5")):
        np.testing.assert_array_equal(
            read_features(out / "features" / "random_cnn" / f.name).features, read_features(f).features
        )


@pytest.mark.slow
def test_run_under_torchrun_two_processes(root, tmp_path):
    """Two gloo ranks: extraction shards the samples, pretraining is DDP, embedding and the report on rank 0;
    every file written once, one report line."""
    from conftest import run_cli

    out = tmp_path / "run"
    args = ["run", "--config", root / "cfg.yaml", "--data", root / "root", "--device", "cpu", "--out", out]
    r = run_cli([*args, "--exclude", "SYN04", "SYN05"], nproc=2, port=29541)
    assert r.returncode == 0, r.stderr[-2500:]
    feats = sorted((out / "features" / "random_cnn").glob("*.h5"))
    assert [read_features(f).attrs["rank"] for f in feats] == [0, 1, 0, 1, 0, 1]  # each sample extracted once
    assert (out / "model" / "model.safetensors").is_file() and (out / "report.html").is_file()
    assert len(list((out / "embeddings").glob("*.h5"))) == 6
    assert r.stdout.count("report:") == 1
