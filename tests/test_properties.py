"""Property-based tests (hypothesis) for the router and the geometry/readers."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spade_st.experts.router import route_weights
from spade_st.io.patches import patch_box, patch_coords, patch_scale


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 20),
    k=st.integers(1, 12),
    e=st.integers(1, 6),
    d=st.integers(1, 8),
    tau=st.sampled_from([0.0, 1e-4, 0.1, 1.0, 100.0]),
    topk=st.one_of(st.none(), st.integers(1, 6)),
    seed=st.integers(0, 10_000),
)
def test_router_weights_are_a_distribution(n, k, e, d, tau, topk, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * 5
    c = torch.randn(k, d, generator=g) * 5
    cmap = torch.randint(0, e, (k,), generator=g)
    w = route_weights(x, c, cmap, e, tau, topk)
    assert w.shape == (n, e)
    assert torch.isfinite(w).all() and (w >= 0).all()
    torch.testing.assert_close(w.sum(1), torch.ones(n))
    if topk is not None:
        assert ((w > 0).sum(1) <= topk).all()
    if tau == 0:
        nearest = cmap[torch.cdist(x, c).argmin(1)]
        assert (w.argmax(1) == nearest).all()
    # experts that own no centroid never get weight
    unused = torch.tensor([i not in set(cmap.tolist()) for i in range(e)])
    assert (w[:, unused] == 0).all()


@settings(max_examples=100, deadline=None)
@given(cx=st.floats(0, 1e5), cy=st.floats(0, 1e5), px=st.floats(0.1, 5.0))
def test_patch_geometry(cx, cy, px):
    s = patch_scale(px)
    x0, y0, x1, y1 = patch_box((cx, cy), s)
    assert abs((x0 + x1) / 2 - cx) < 1e-6 * max(1, cx) and abs((y0 + y1) / 2 - cy) < 1e-6 * max(1, cy)
    assert abs((x1 - x0) - 224 * 0.5 / px) < 1e-6 * max(1, x1)
    tl = patch_coords(np.array([[cx, cy]]), px)[0]
    half = 224 * s / 2
    assert np.all(np.abs(tl + half - np.array([cx, cy])) <= 0.5 + 1e-6)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 12), g=st.integers(1, 6), seed=st.integers(0, 1000))
def test_write_read_roundtrip(tmp_path_factory, n, g, seed):
    import anndata as ad
    import pandas as pd

    from spade_st.io import read_hest, write_sample

    rng = np.random.default_rng(seed)
    a = ad.AnnData(
        X=rng.poisson(2, size=(n, g)).astype(np.int32),
        obs=pd.DataFrame(index=[f"b{i}" for i in range(n)]),
        var=pd.DataFrame(index=[f"G{j}" for j in range(g)]),
    )
    a.obsm["spatial"] = rng.uniform(0, 99.9, size=(n, 2))
    root = tmp_path_factory.mktemp("prop")
    img = rng.integers(0, 255, size=(120, 120, 3), dtype=np.uint8)
    write_sample(root, "S", a, img, 1.0, progress=False)  # a patch spans 112 image px: it fits in 120
    (s,) = read_hest(root)
    np.testing.assert_array_equal(s.adata.X.toarray(), a.X)
    np.testing.assert_allclose(s.adata.obsm["spatial"], a.obsm["spatial"])
    assert list(s.patches.barcodes) == list(a.obs_names) and len(s.patches) == n
