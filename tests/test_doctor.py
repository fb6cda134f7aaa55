"""``spade-st doctor`` exits 1 only when a check the chosen setup needs fails; optional gaps say "optional"."""

from __future__ import annotations

import pytest

from spade_st.cli import main


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """An empty weights folder: every encoder that needs a weights file lacks it."""
    monkeypatch.delenv("SPADE_ST_WEIGHTS", raising=False)
    (tmp_path / "weights").mkdir()
    return str(tmp_path / "weights")


@pytest.fixture
def plain_config(tmp_path):
    """A config that needs no weights file and no optional package (random_cnn, scikit-learn k-means)."""
    path = tmp_path / "plain.yaml"
    path.write_text("encoder: random_cnn\nclustering:\n  backend: sklearn\n")
    return str(path)


def _lines(out: str, start: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(start)]


def test_only_optional_things_missing_exits_0_and_says_optional(no_weights, plain_config, capsys):
    rc = main(["doctor", "--config", plain_config, "--weights-dir", no_weights])
    out = capsys.readouterr().out
    assert rc == 0, out
    missing = [line for line in _lines(out, "[") if "weights uni " in line]
    assert missing and all("optional" in line and "[FIX]" not in line for line in missing), out
    assert not _lines(out, "[FIX]"), out
    assert "doctor: ready" in out


def test_the_configs_encoder_weights_missing_exits_1(no_weights, capsys):
    rc = main(["doctor", "--config", "spade_hest1k_uni", "--weights-dir", no_weights])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert [line for line in _lines(out, "[FIX]") if "weights uni " in line], out  # the config's encoder
    assert not [line for line in _lines(out, "[FIX]") if "weights virchow2" in line], out  # not the config's
    assert "needed check(s) failed: weights uni" in out


def test_a_package_the_config_imports_missing_exits_1(no_weights, plain_config, capsys, monkeypatch):
    import spade_st.doctor as doctor

    packages = {**getattr(doctor, "PACKAGES", {}), "faiss-cpu": ("no_such_module_xyz", "pip install faiss-cpu")}
    monkeypatch.setattr(doctor, "PACKAGES", packages, raising=False)
    assert main(["doctor", "--config", plain_config, "--weights-dir", no_weights]) == 0  # sklearn k-means
    assert "optional" in _lines(capsys.readouterr().out, "[opt] faiss-cpu")[0]
    assert main(["doctor", "--config", "her2st", "--weights-dir", no_weights]) == 1  # backend: faiss
    assert _lines(capsys.readouterr().out, "[FIX] faiss-cpu")


def test_a_broken_data_root_exits_1(no_weights, tmp_path, capsys):
    (tmp_path / "root").mkdir()
    rc = main(["doctor", "--data", str(tmp_path / "root"), "--weights-dir", no_weights])
    out = capsys.readouterr().out
    assert rc == 1 and _lines(out, "[FIX] data root"), out
