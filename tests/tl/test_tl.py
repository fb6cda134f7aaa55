"""The notebook layer: AnnData in, results in obsm/uns, the data root untouched, the public API's shape."""

from __future__ import annotations

import hashlib
import inspect
import subprocess
import sys

import numpy as np
import pytest

import spade_st as spade
from spade_st._validation import SpadeInputError
from spade_st.io import read_hest


def _tree_hash(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def fitted(synthetic_root, tmp_path_factory):
    """Features of the synthetic root's samples as AnnData and a small model trained from them in memory."""
    before = _tree_hash(synthetic_root)
    samples = read_hest(synthetic_root)
    adatas = {s.id: spade.tl.extract(s, "random_cnn", device="cpu", progress=False) for s in samples}
    model = spade.tl.fit(
        adatas,
        config="demo",
        out=tmp_path_factory.mktemp("tlfit"),
        epochs=3,
        k1=2,
        n_experts=2,
        batch_size=16,
        device="cpu",
        progress=False,
    )
    assert _tree_hash(synthetic_root) == before  # nothing written into the data root
    return samples, adatas, model


def test_extract_from_image_equals_the_hest_patches(fitted):
    samples, adatas, _ = fitted
    s = samples[0]
    a = s.adata.copy()
    assert spade.tl.extract(a, "random_cnn", img=s.layout.wsi(s.id), device="cpu", progress=False) is None
    ref = adatas[s.id]
    np.testing.assert_allclose(a[ref.obs_names].obsm["X_random_cnn"], ref.obsm["X_random_cnn"], atol=1e-4)
    with pytest.raises(SpadeInputError, match="no image"):
        spade.tl.extract(s.adata.copy(), "random_cnn", device="cpu")


def test_fit_embed_predict_in_memory(fitted):
    samples, adatas, model = fitted
    a = adatas[samples[-1].id].copy()
    assert spade.tl.embed(a, model) is None
    np.testing.assert_array_equal(a.obsm["X_spade"], model.embed(a.obsm["X_random_cnn"]))
    assert a.obsm["spade_expert_weights"].shape == (a.n_obs, model.config.n_experts)
    assert a.uns["spade"]["encoder"] == "random_cnn" and a.uns["spade"]["n_experts"] == model.config.n_experts
    b = spade.tl.embed(a, model, key_added="X_other", copy=True)
    assert "X_other" in b.obsm and "X_other" not in a.obsm
    pred = spade.tl.predict_expression(a, model)
    assert pred.shape == (a.n_obs, len(model.predictor.genes)) and list(pred.obs_names) == list(a.obs_names)
    assert pred.uns["spade_prediction"]["method"] == "ridge"
    np.testing.assert_array_equal(pred.obsm["spatial"], a.obsm["spatial"])
    g = list(pred.var_names[:2])
    knn = spade.tl.predict_expression(a, model, [x.lower() for x in g], method="knn")  # names match by case
    assert list(knn.var_names) == g and np.isfinite(knn.X).all()
    with pytest.raises(SpadeInputError, match="not in this model's expression head"):
        spade.tl.predict_expression(a, model, ["NOT_A_GENE"])
    with pytest.raises(SpadeInputError, match="unknown prediction method"):
        spade.tl.predict_expression(a, model, method="mlp")


def test_fit_refuses_ambiguous_input(fitted):
    _, adatas, _ = fitted
    one = next(iter(adatas.values()))
    with pytest.raises(SpadeInputError, match="at least two samples"):
        spade.tl.fit({"x": one}, progress=False)
    bare = one.copy()
    bare.uns.pop("spade")
    with pytest.raises(SpadeInputError, match="as a dict"):
        spade.tl.fit([bare, bare.copy()], progress=False)


def test_public_api_takes_anndata_first():
    for mod in (spade.tl, spade.pl):
        for name in mod.__all__:
            fn = getattr(mod, name)
            if inspect.ismodule(fn):
                continue
            params = list(inspect.signature(fn).parameters.values())
            positional = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
            assert params[0].name in ("adata", "data"), f"{mod.__name__}.{name}"
            assert len(positional) <= 3, f"{mod.__name__}.{name} has {len(positional)} positional parameters"
    for name in ("SpadeInputError", "LayoutError", "read_features", "pretrain", "PretrainConfig", "tl", "pl"):
        assert getattr(spade, name) is not None
    assert spade.eval.fewshot.few_shot is spade.eval.few_shot  # regular packages, lazy submodules


def test_imports_leave_process_settings_alone():
    code = (
        "import matplotlib, PIL.Image as I; import spade_st.pl, spade_st.io, spade_st.tl, spade_st.io.wsi; "
        "print(matplotlib.get_backend(), I.MAX_IMAGE_PIXELS)"
    )
    env = {"MPLBACKEND": "svg", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["svg", "89478485"]


def test_missing_optional_package_names_the_extra():
    from spade_st._optional import require

    with pytest.raises(ImportError, match=r"pip install 'spade-st\[plot\]'"):
        require("surely_not_installed_pkg", "umap-learn", "plot")
    assert require("numpy") is np


def test_extract_keeps_patient_and_organ_and_embed_refuses_other_encoders(fitted):
    samples, adatas, model = fitted
    a = adatas[samples[0].id]
    assert a.uns["spade"]["patient"] == samples[0].patient and a.uns["spade"]["organ"] == samples[0].organ
    other = a.copy()
    other.obsm["X_resnet50_trunc"] = other.obsm.pop("X_random_cnn")  # same width would pass a shape check
    with pytest.raises(SpadeInputError, match="takes random_cnn features"):
        spade.tl.embed(other, model)


def test_fit_refuses_normalised_counts(fitted):
    _, adatas, _ = fitted
    bad = {k: a.copy() for k, a in list(adatas.items())[:2]}
    first = next(iter(bad.values()))
    first.X = np.log1p(first.X.toarray() if hasattr(first.X, "toarray") else first.X)
    with pytest.raises(SpadeInputError, match="RAW counts"):
        spade.tl.fit(bad, progress=False)
