"""Small-cohort options: expert sizing, a shared gene head, residual/concat outputs, spatial smoothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spade_st.experts import SpadeConfig, SpadeModel, TwoStageClustering
from spade_st.genes import smooth_spatial, spot_pitch
from spade_st.train.optim import StackedAdamW
from spade_st.train.projection import fit_expression_projection, fit_projection, rotation


def _blobs(sizes, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=20, size=(len(sizes), d))
    return np.concatenate([c + rng.normal(size=(n, d)) for c, n in zip(centres, sizes, strict=True)]).astype(np.float32)


def test_min_expert_spots_makes_fewer_experts_when_data_are_few():
    x = _blobs([200, 200, 40, 30, 200, 200, 25, 105])  # 1000 spots, some small clusters
    free = TwoStageClustering(k1=8, n_experts=8, backend="sklearn", seed=0).fit(x)
    assert free.n_experts_ == 8 and np.bincount(free.experts_).min() < 128 and free.sizing_ == ""
    sized = TwoStageClustering(k1=8, n_experts=8, backend="sklearn", seed=0, min_expert_spots=128).fit(x)
    counts = np.bincount(sized.experts_)
    assert 1 < sized.n_experts_ <= 1000 // 128 and counts.min() >= 128
    assert "8 experts requested" in sized.sizing_ and f"{sized.n_experts_} made" in sized.sizing_
    # at scale the rule does not bind: the same result as without it
    big = TwoStageClustering(k1=8, n_experts=8, backend="sklearn", seed=0, min_expert_spots=10).fit(x)
    np.testing.assert_array_equal(big.experts_, free.experts_)


def test_smooth_spatial_averages_the_3x3_neighbourhood():
    yy, xx = np.mgrid[0:5, 0:6]
    coords = np.c_[xx.ravel(), yy.ravel()] * 291.0  # legacy ST pitch in pixels
    assert spot_pitch(coords) == pytest.approx(291.0)
    x = np.random.default_rng(0).normal(size=(30, 3))
    sm = smooth_spatial(x, coords, 1.5)
    grid = x.reshape(5, 6, 3)
    np.testing.assert_allclose(sm.reshape(5, 6, 3)[2, 3], grid[1:4, 2:5].mean((0, 1)))  # interior: 9 spots
    np.testing.assert_allclose(sm.reshape(5, 6, 3)[0, 0], grid[0:2, 0:2].mean((0, 1)))  # corner: 4 spots
    np.testing.assert_array_equal(smooth_spatial(x, coords, 0), x)


def test_projection_is_the_pca_of_standardised_features():
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(500, 12)) @ rng.normal(size=(12, 12)) * rng.uniform(0.1, 10, 12) + 5).astype(np.float32)
    rows = np.arange(0, 500, 2)
    mean, w = fit_projection(x, rows, out_dim=6)
    z = (x[rows] - mean) @ w
    ref = PCA(6).fit_transform(StandardScaler().fit_transform(x[rows]))
    for j in range(6):  # the same components up to one scale for all and a sign each
        assert abs(np.corrcoef(z[:, j], ref[:, j])[0, 1]) > 0.999
    assert z.var(0, ddof=1).mean() == pytest.approx(1.0, rel=1e-3) and z.var(0)[0] > 2 * z.var(0)[-1]
    _, ww = fit_projection(x, rows, out_dim=6, whiten=True)
    np.testing.assert_allclose(((x[rows] - mean) @ ww).var(0, ddof=1), 1.0, rtol=1e-3)
    _, wide = fit_projection(x, rows, out_dim=20)
    assert wide.shape == (12, 20) and not wide[:, 12:].any()


def test_rotation_keeps_the_variance_structure_through_per_dimension_standardisation():
    """Standardising each dimension of PCA components whitens them; after the rotation it does not (the
    components' variances survive), so a ridge probe on standardised inputs can still shrink weak directions."""
    from sklearn.preprocessing import StandardScaler

    q = rotation(8)
    np.testing.assert_allclose(q @ q.T, np.eye(8), atol=1e-12)
    np.testing.assert_array_equal(q, rotation(8))  # fixed: the same matrix every time
    assert not np.allclose(np.abs(q), np.eye(8))  # mixes the components
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2000, 8)) * np.geomspace(10, 0.1, 8)) @ np.linalg.qr(rng.normal(size=(8, 8)))[0]
    mean, w = fit_projection(x.astype(np.float32), np.arange(2000), out_dim=8)
    z = (x - mean) @ w

    def spectrum(v):
        s = np.linalg.eigvalsh(np.cov(StandardScaler().fit_transform(v), rowvar=False))
        return s[-1] / s[0]

    assert spectrum(z) == pytest.approx(1.0, abs=1e-3)  # whitened: every direction looks alike
    assert spectrum(z @ q) > 100  # rotated: the components' variances (100 : 0.01) mostly survive
    # numpy's legacy stream and a sign-fixed QR: the same matrix in every version
    np.testing.assert_allclose(rotation(3)[0], [0.586840026496, -0.485382783807, 0.648091302585], atol=1e-9)
    with pytest.raises(ValueError, match="dim >= 1"):
        rotation(0)


def test_ridge_on_standardised_components_cannot_regularise_unless_rotated():
    """Ridge (standardised inputs, intercept) on the projection's own rows: on the unrotated components every
    alpha gives the same Pearson r (predictions only shrink toward the mean); rotated, alpha changes it."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 16)) * np.geomspace(10, 0.1, 16)
    y = x[:, 0] + 10 * rng.normal(size=600)
    train, test = np.arange(100), np.arange(100, 600)
    mean, w = fit_projection(x.astype(np.float32), train, out_dim=16)
    z = (x - mean) @ w

    def pearsons(v):
        fits = [make_pipeline(StandardScaler(), Ridge(alpha=a)).fit(v[train], y[train]) for a in (1e-3, 1e3)]
        return [np.corrcoef(f.predict(v[test]), y[test])[0, 1] for f in fits]

    low, high = pearsons(z)
    assert high == pytest.approx(low, abs=1e-6)
    low, high = pearsons(z @ rotation(16))
    assert abs(high - low) > 0.01


def test_pretrain_rotates_the_projection_when_asked(tmp_path):
    import anndata as ad

    import spade_st as spade

    rng = np.random.default_rng(0)
    adatas = {}
    for i in range(2):
        a = ad.AnnData(rng.poisson(3, size=(60, 30)).astype(np.float32))
        a.var_names = [f"G{j}" for j in range(30)]
        a.obs_names = [f"s{i}_{j}" for j in range(60)]
        a.obsm["spatial"] = rng.uniform(0, 1000, size=(60, 2))
        a.obsm["X_random_cnn"] = rng.normal(size=(60, 16)).astype(np.float32)
        adatas[f"S{i}"] = a
    opts = {"epochs": 1, "k1": 2, "n_experts": 1, "batch_size": 16, "device": "cpu", "progress": False}
    opts |= {"output": "residual", "out_dim": 8, "n_top_genes": 10}
    plain = spade.tl.fit(adatas, config="demo", out=tmp_path / "plain", **opts)
    rotated = spade.tl.fit(adatas, config="demo", out=tmp_path / "rotated", rotate=True, **opts)
    assert rotated.config.rotate and not plain.config.rotate
    torch.testing.assert_close(rotated.proj_mean, plain.proj_mean)
    want = (plain.proj_weight.double() @ torch.as_tensor(rotation(8))).float()
    torch.testing.assert_close(rotated.proj_weight, want)
    assert SpadeModel.from_pretrained(tmp_path / "rotated").config.rotate


def _model(output="spade", shared=False, E=3):
    cfg = SpadeConfig(
        encoder="x",
        feature_dim=10,
        genes=[f"g{i}" for i in range(7)],
        n_experts=E,
        k1=2,
        out_dim=4,
        output=output,
        shared_gene_head=shared,
    )
    rng = np.random.default_rng(0)
    return SpadeModel(cfg, rng.normal(size=(2 * E, 10)).astype(np.float32), np.repeat(np.arange(E), 2))


def test_expression_projection_finds_the_directions_that_predict_expression():
    """Expression planted on two low-variance feature directions beside large-variance noise: the expression
    projection's components span exactly those directions; PCA's top components miss them."""
    rng = np.random.default_rng(0)
    n, d = 600, 40
    x = rng.normal(size=(n, d)) * np.r_[np.full(10, 10.0), np.ones(d - 10)]  # 10 loud, uninformative columns
    y = x[:, [20, 30]] @ rng.normal(size=(2, 15)) + 0.1 * rng.normal(size=(n, 15))
    samples = np.repeat(["S1", "S2", "S3"], n // 3)
    mean, w = fit_expression_projection(x.astype(np.float32), y, np.arange(n), samples, out_dim=4)
    z = (x - mean) @ w
    v = z.var(0, ddof=1)
    assert abs(v.mean() - 1) < 1e-6  # unit average variance, as the PCA projection
    assert v[2:].max() < 0.01 * v[:2].min()  # beyond the planted rank 2 only the ridge's fit to noise is left
    planted = x[:, [20, 30]] - x[:, [20, 30]].mean(0)
    r2 = 1 - np.linalg.lstsq(z[:, :2], planted, rcond=None)[1] / (planted**2).sum(0)
    assert (r2 > 0.99).all(), r2  # the two components are the planted directions
    _, wp = fit_projection(x.astype(np.float32), np.arange(n), out_dim=2)
    zp = (x - x.mean(0)) @ wp
    r2p = 1 - np.linalg.lstsq(zp, planted, rcond=None)[1] / (planted**2).sum(0)
    assert (r2p < 0.2).all(), r2p
    again = fit_expression_projection(x.astype(np.float32), y, np.arange(n), samples, out_dim=4)
    assert np.array_equal(again[1], w)  # deterministic (signs fixed)


def test_residual_starts_at_the_projection_and_concat_keeps_both():
    x = np.random.default_rng(1).normal(size=(20, 10)).astype(np.float32)
    mean, w = fit_projection(x, np.arange(20), 4)
    m = _model("residual")
    m.set_projection(mean, w)
    with torch.no_grad():
        m.image_heads.ln_w.zero_()
        m.image_heads.ln_b.zero_()
    np.testing.assert_allclose(m.embed(x), (x - mean) @ w, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        m.image_heads.ln_w.fill_(1.0)
    assert not np.allclose(m.embed(x), (x - mean) @ w)
    c = _model("concat")
    c.set_projection(mean, w)
    z = c.embed(x)
    assert z.shape == (20, 8) and c.config.embed_dim == 8
    np.testing.assert_allclose(z[:, :4], (x - mean) @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(z[:, 4:], c.embed(x, latent=True), rtol=1e-6)
    plain = _model("spade")
    plain.image_heads.load_state_dict(c.image_heads.state_dict())
    np.testing.assert_allclose(z[:, 4:], plain.embed(x), rtol=1e-6)  # the experts' half is the paper's output
    with pytest.raises(ValueError, match="output must be one of"):
        _model("both")


def test_shared_gene_head_is_one_head_for_every_expert(tmp_path):
    m = _model(shared=True).eval()
    assert m.gene_heads.n_experts == 1 and m.image_heads.n_experts == 3
    g = torch.randn(3, 5, 7)
    s = m.gene_side(g)
    for e in range(3):  # every expert's batch goes through the same head
        torch.testing.assert_close(s[e], m.gene_heads.forward_all(g[e])[0])
    expr = np.random.default_rng(0).poisson(3, size=(6, 7)).astype(np.float32)
    np.testing.assert_allclose(
        m.embed_genes(expr, features=np.zeros((6, 10), np.float32)), m.embed_genes(expr), rtol=1e-6
    )
    m.save_pretrained(tmp_path / "m")
    again = SpadeModel.from_pretrained(tmp_path / "m")
    assert again.config.shared_gene_head and again.gene_heads.n_experts == 1


def test_shared_parameters_step_as_one_adamw():
    """A (1, ...) parameter beside (E, ...) ones: updated like torch.optim.AdamW whenever any expert steps."""
    torch.manual_seed(0)
    per = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    shared = torch.nn.Parameter(torch.randn(1, 4, dtype=torch.float64))
    ref = torch.nn.Parameter(shared.detach().clone()[0])
    opt = StackedAdamW([per, shared], 3, lr=0.1, weight_decay=0.01)
    ref_opt = torch.optim.AdamW([ref], lr=0.05, weight_decay=0.01)
    for t in range(5):
        g = torch.randn(4, dtype=torch.float64)
        per.grad, shared.grad, ref.grad = torch.randn(3, 4, dtype=torch.float64), g[None].clone(), g.clone()
        active = torch.tensor([t % 2 == 0, False, True])
        opt.step(torch.full((3,), 0.1), active, shared_lr=0.05)
        ref_opt.step()
    torch.testing.assert_close(shared.detach()[0], ref.detach())
    assert int(opt.shared_steps[0]) == 5 and opt.steps.tolist() == [3, 0, 5]
    with pytest.raises(ValueError, match="leading expert axis"):
        StackedAdamW([torch.nn.Parameter(torch.zeros(2, 4))], 3)


def test_reconstruction_term_is_the_shared_decoders_mse():
    from spade_st.experts.loss import bleep_loss
    from spade_st.train.loop import expert_losses

    cfg = SpadeConfig(
        encoder="x", feature_dim=10, genes=[f"g{i}" for i in range(7)], n_experts=3, k1=2, out_dim=4, recon_weight=0.5
    )
    m = SpadeModel(cfg, np.random.default_rng(0).normal(size=(6, 10)).astype(np.float32), np.repeat(np.arange(3), 2))
    m.eval()
    with torch.no_grad():
        m.decoder_w.normal_()
        m.decoder_b.normal_()
    feats, genes = torch.randn(3, 5, 10), torch.randn(3, 5, 7)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False
    got = expert_losses(m, feats, genes, mask, "bleep", 1.0)
    z, s = m.image_side(feats), m.gene_side(genes)
    err = ((z @ m.decoder_w[0] + m.decoder_b[0] - genes) ** 2).mean(-1)
    mse = torch.stack([err[e][mask[e]].mean() for e in range(3)])
    torch.testing.assert_close(got, bleep_loss(z, s, 1.0, mask) + 0.5 * mse)
    got.sum().backward()
    assert m.decoder_w.grad is not None and m.decoder_w.shape[0] == 1  # one decoder, shared by the experts
    assert not hasattr(_model(), "decoder_w")  # off by default (the paper)


def test_expert_made_of_one_section_warns(tmp_path):
    """Two sections whose features do not overlap (a scanner or staining shift): every expert holds one section's
    spots, which is said with the share, and saved in clustering_qc.csv."""
    import anndata as ad
    import pandas as pd
    import pytest

    import spade_st as spade
    from spade_st._validation import DataWarning

    rng = np.random.default_rng(0)
    adatas = {}
    for i, shift in enumerate((0.0, 50.0)):
        a = ad.AnnData(rng.poisson(3, size=(80, 30)).astype(np.float32))
        a.var_names = [f"G{j}" for j in range(30)]
        a.obs_names = [f"s{i}_{j}" for j in range(80)]
        a.obsm["spatial"] = rng.uniform(0, 1000, size=(80, 2))
        a.obsm["X_random_cnn"] = (rng.normal(size=(80, 64)) + shift).astype(np.float32)
        adatas[f"S{i}"] = a
    opts = {"epochs": 1, "k1": 2, "n_experts": 2, "batch_size": 16, "device": "cpu", "progress": False}
    with pytest.warns(DataWarning, match=r"100% of its \d+ training spots come from sample S"):
        spade.tl.fit(adatas, config="demo", out=tmp_path, n_top_genes=10, **opts)
    qc = pd.read_csv(tmp_path / "clustering_qc.csv")
    assert (qc["largest_sample_share"] == 1.0).all() and set(qc["largest_sample"]) == {"S0", "S1"}
