"""Routing, the model artefact, and the importer of released checkpoints."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from spade_st._validation import SpadeInputError
from spade_st.experts import SpadeConfig, SpadeModel, import_released, route_weights
from spade_st.experts.released import EXPECTED


def _model(D=8, G=5, E=3, K=6, seed=0):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    cfg = SpadeConfig(encoder="enc", feature_dim=D, genes=[f"G{i}" for i in range(G)], n_experts=E, k1=2)
    return SpadeModel(cfg, rng.normal(size=(K, D)) * 3, np.arange(K) % E)


def test_routing_tau_to_zero_is_nearest_centroid():
    m = _model()
    x = torch.randn(50, 8) * 3
    nearest = torch.cdist(x, m.centroids).argmin(1)
    hard = torch.nn.functional.one_hot(m.centroid_expert[nearest], 3).float()
    torch.testing.assert_close(route_weights(x, m.centroids, m.centroid_expert, 3, tau_r=1e-6), hard)
    torch.testing.assert_close(route_weights(x, m.centroids, m.centroid_expert, 3, tau_r=0), hard)
    # and the embedding is then the nearest expert's head alone
    emb = m.embed(x.numpy(), tau_r=0)
    with torch.no_grad():
        m.eval()
        direct = m.image_heads.forward_all(x)[m.centroid_expert[nearest], torch.arange(50)]
    np.testing.assert_allclose(emb, direct.numpy(), rtol=1e-5, atol=1e-5)


def test_routing_weights_formula():
    m = _model()
    x = torch.randn(4, 8)
    w = torch.softmax(-torch.cdist(x, m.centroids) / 0.1, 1)
    alpha = torch.stack([w[:, m.centroid_expert == e].sum(1) for e in range(3)], 1)
    torch.testing.assert_close(route_weights(x, m.centroids, m.centroid_expert, 3, 0.1), alpha)


def test_topk_routing():
    m = _model()
    x = np.random.default_rng(1).normal(size=(40, 8)).astype(np.float32)
    dense, w = m.embed(x, tau_r=5.0, return_weights=True)
    sparse, ws = m.embed(x, tau_r=5.0, topk=3, return_weights=True)  # k = E: identical to dense
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ws, w, rtol=1e-6)
    s1, w1 = m.embed(x, tau_r=5.0, topk=1, return_weights=True)
    assert ((w1 > 0).sum(1) == 1).all() and np.allclose(w1.sum(1), 1)
    assert (w1.argmax(1) == w.argmax(1)).all()
    with torch.no_grad():
        heads = m.image_heads.eval().forward_all(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(s1, heads[w.argmax(1), np.arange(40)], rtol=1e-5, atol=1e-5)


def test_wrong_feature_dim_or_encoder_refused():
    m = _model()
    with pytest.raises(SpadeInputError, match="8-d"):
        m.embed(np.zeros((3, 9), np.float32))
    with pytest.raises(SpadeInputError, match="trained on 'enc' features"):
        m.embed(np.zeros((3, 8), np.float32), encoder="uni")
    with pytest.raises(SpadeInputError, match="5 genes"):
        m.embed_genes(np.zeros((3, 4), np.float32))


def test_save_and_reload(tmp_path):
    m = _model()
    x = np.random.default_rng(2).normal(size=(20, 8)).astype(np.float32)
    m.save_pretrained(tmp_path / "m")
    r = SpadeModel.from_pretrained(tmp_path / "m")
    np.testing.assert_array_equal(r.embed(x), m.embed(x))
    assert r.config == m.config
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(SpadeInputError, match="truncated or not safetensors"):
        SpadeModel.from_pretrained(tmp_path / "m")


def _released(tmp_path, E=2, D=8, G=5, K=4, extra_key=None, drop_key=None):
    torch.manual_seed(0)
    paths = []
    for e in range(E):
        sd = {}
        for side, d_in in (("image_projection", D), ("spot_projection", G)):
            sd[f"{side}.projection.weight"] = torch.randn(16, d_in)
            sd[f"{side}.projection.bias"] = torch.randn(16)
            sd[f"{side}.fc.weight"] = torch.randn(16, 16)
            sd[f"{side}.fc.bias"] = torch.randn(16)
            sd[f"{side}.layer_norm.weight"] = torch.randn(16)
            sd[f"{side}.layer_norm.bias"] = torch.randn(16)
        if extra_key:
            sd[extra_key] = torch.zeros(1)
        if drop_key:
            del sd[drop_key]
        p = tmp_path / f"expert_{e}.pt"
        torch.save({"model": sd}, p)
        paths.append(p)
    np.save(tmp_path / "centroids.npy", np.random.default_rng(0).normal(size=(K, D)).astype(np.float32))
    np.save(tmp_path / "map.npy", np.arange(K) % E)
    return paths


def test_import_released(tmp_path):
    paths = _released(tmp_path)
    m = import_released(paths, tmp_path / "centroids.npy", tmp_path / "map.npy", encoder="uni")
    sd0 = torch.load(paths[0], weights_only=True)["model"]
    x = torch.randn(3, 8)
    p = x @ sd0["image_projection.projection.weight"].T + sd0["image_projection.projection.bias"]
    h = torch.nn.functional.gelu(p) @ sd0["image_projection.fc.weight"].T + sd0["image_projection.fc.bias"] + p
    ref = torch.nn.functional.layer_norm(
        h, (16,), sd0["image_projection.layer_norm.weight"], sd0["image_projection.layer_norm.bias"]
    )
    got = m.embed(x.numpy(), tau_r=0)
    first = m.route(x.numpy(), tau_r=0).argmax(1) == 0
    np.testing.assert_allclose(got[first], ref.numpy()[first], rtol=1e-4, atol=1e-4)
    for e, path in enumerate(paths):  # every expert's both heads, tensor by tensor
        sd = torch.load(path, weights_only=True)["model"]
        for side, heads in (("image_projection", m.image_heads), ("spot_projection", m.gene_heads)):
            for k, v in heads.expert_state(e).items():
                torch.testing.assert_close(v, sd[f"{side}.{k}"])
        assert {k for k in sd if k in EXPECTED} == set(EXPECTED)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"extra_key": "image_encoder.model.weight"}, "unexpected keys"),
        ({"drop_key": "spot_projection.fc.bias"}, "missing keys"),
    ],
)
def test_import_released_is_strict(tmp_path, kw, needle):
    paths = _released(tmp_path, **kw)
    with pytest.raises(SpadeInputError, match=needle):
        import_released(paths, tmp_path / "centroids.npy", tmp_path / "map.npy")


def test_import_refuses_pickled_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pt"
    p.write_bytes(pickle.dumps({"model": Evil()}))
    np.save(tmp_path / "c.npy", np.zeros((2, 8), np.float32))
    np.save(tmp_path / "m.npy", np.zeros(2, np.int64))
    with pytest.raises(SpadeInputError, match="refusing"):
        import_released([p], tmp_path / "c.npy", tmp_path / "m.npy")


@pytest.mark.parametrize("skew", [False, True])
def test_sparse_grouped_and_per_expert_paths_agree(skew):
    """Top-k mixing as one padded contraction equals the per-expert loop and the dense mix restricted to top-k."""
    from spade_st.experts.heads import StackedHeads
    from spade_st.experts.router import mix_experts

    torch.manual_seed(0)
    heads = StackedHeads(6, 10, 8).eval()
    x = torch.randn(50, 10)
    alpha = torch.softmax(torch.randn(50, 6) * 3, 1)
    if skew:  # most rows routed to one expert
        alpha[:40] = torch.tensor([0.9, 0.1, 0, 0, 0, 0])
    vals, idx = alpha.topk(2, 1)
    alpha = torch.zeros_like(alpha).scatter_(1, idx, vals / vals.sum(1, keepdim=True))
    with torch.no_grad():
        a = mix_experts(heads, x, alpha, sparse=True, grouped=True)
        b = mix_experts(heads, x, alpha, sparse=True, grouped=False)
        c = mix_experts(heads, x, alpha, sparse=False)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)


def test_import_released_gene_heads_take_raw_counts(tmp_path):
    """The released experts were trained on raw counts: with or without gene names the panel feeds raw counts."""
    import anndata as ad

    paths = _released(tmp_path)
    genes = ["ERBB2", "GRB7", "KRT19", "CD74", "MGP"]
    counts = np.random.default_rng(0).poisson(5, size=(7, 5)).astype(np.float32)
    a = ad.AnnData(counts, var=pd.DataFrame(index=genes[::-1]))  # columns in another order: matched by name
    a.X = counts
    for names in (genes, None):
        m = import_released(paths, tmp_path / "centroids.npy", tmp_path / "map.npy", genes=names)
        assert m.config.gene_mode == "raw"
    m = import_released(paths, tmp_path / "centroids.npy", tmp_path / "map.npy", genes=genes)
    fed = m.gene_panel().transform(a)
    np.testing.assert_array_equal(fed, counts[:, ::-1])


_SAVE_SCRIPT = """
import hashlib, sys, numpy as np, torch
from spade_st.experts import SpadeConfig, SpadeModel
torch.manual_seed(0)
cfg = SpadeConfig(encoder="x", feature_dim=6, genes=[f"g{i}" for i in range(5)], n_experts=2, k1=2, out_dim=4)
m = SpadeModel(cfg, np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32), np.array([0, 0, 1, 1]))
for i in range(int(sys.argv[2])):
    m.save_pretrained(sys.argv[1])
    print(hashlib.sha256(open(sys.argv[1] + "/model.safetensors", "rb").read()).hexdigest())
"""


def test_artefact_is_byte_reproducible_across_processes(tmp_path):
    """The same model saved repeatedly and in two processes gives one sha256 (safetensors' header included)."""
    import subprocess
    import sys

    hashes = []
    for i in range(2):
        r = subprocess.run(
            [sys.executable, "-c", _SAVE_SCRIPT, str(tmp_path / f"m{i}"), "6"], capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr[-1500:]
        hashes += r.stdout.split()
    assert len(hashes) == 12 and len(set(hashes)) == 1, hashes
