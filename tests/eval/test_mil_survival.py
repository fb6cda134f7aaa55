"""ABMIL, the mean-pooled probe and survival recover a planted signal and sit at chance on shuffled labels."""

from __future__ import annotations

import numpy as np
import pytest

from spade_st.datasets.bags import planted_bags
from spade_st.eval.mil import MILConfig, abmil_cv, classification_metrics, mean_pool_probe
from spade_st.eval.survival import (
    c_index,
    cox_mean_pool,
    predict_risk,
    quantile_bins,
    train_survival_abmil,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny torch models: faster on one thread


@pytest.fixture(scope="module")
def data():
    return planted_bags(n_slides=80, dim=16, seed=0, shift=3.0)


def _split(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n)[: n // 4])


@pytest.mark.slow
def test_abmil_recovers_signal_and_shuffled_is_chance(data):
    bags, y, _, _ = data
    test = _split(len(bags))
    cfg = MILConfig(epochs=8, lr=5e-4, folds=3)
    p, models = abmil_cv(bags, y, test, cfg)
    assert len(models) == 3
    m = classification_metrics(y[test], p)
    assert m["auroc"] > 0.9 and m["balanced_accuracy"] > 0.8
    ys = np.random.default_rng(1).permutation(y)
    p0, _ = abmil_cv(bags, ys, test, cfg)
    assert abs(classification_metrics(ys[test], p0)["auroc"] - 0.5) < 0.3


@pytest.mark.slow
def test_abmil_attends_to_witnesses(data):
    import torch

    bags, y, _, _ = data
    _, models = abmil_cv(bags, y, _split(len(bags)), MILConfig(epochs=8, lr=5e-4, folds=2))
    i = int(np.flatnonzero(y == 1)[0])
    n = len(bags[i])
    k = round(0.15 * n)
    with torch.no_grad():
        _, w = models[0](torch.as_tensor(bags[i]), return_attention=True)
    assert w[:k].mean() > 2 * w[k:].mean()  # the planted instances get the attention


def test_mean_pool_probe(data):
    bags, y, _, _ = data
    test = _split(len(bags))
    assert classification_metrics(y[test], mean_pool_probe(bags, y, test))["auroc"] > 0.8
    ys = np.random.default_rng(2).permutation(y)
    assert abs(classification_metrics(ys[test], mean_pool_probe(bags, ys, test))["auroc"] - 0.5) < 0.3


@pytest.mark.slow
def test_survival_recovers_hazard_and_shuffled_is_chance():
    """Exponential event times are noisy: on this split the ranking by the true risk group reaches ~0.7, so the
    bar is 0.6 for both models; with shuffled outcomes the C-index must stay within 0.1 of chance."""
    bags, _, times, events = planted_bags(n_slides=200, dim=16, seed=5, shift=4.0)
    test = np.sort(np.random.default_rng(3).permutation(len(bags))[:60])
    train = np.setdiff1d(np.arange(len(bags)), test)
    edges = quantile_bins(times[train], events[train])
    assert len(edges) == 5 and edges[0] == 0 and np.isinf(edges[-1])
    model = train_survival_abmil(bags, times, events, train, epochs=10, lr=1e-3)
    assert c_index(times[test], events[test], predict_risk(model, [bags[i] for i in test])) > 0.6
    assert c_index(times[test], events[test], cox_mean_pool(bags, times, events, train, test)) > 0.6
    perm = np.random.default_rng(4).permutation(len(bags))
    ts, es = times[perm], events[perm]
    model0 = train_survival_abmil(bags, ts, es, train, epochs=10, lr=1e-3)
    assert abs(c_index(ts[test], es[test], predict_risk(model0, [bags[i] for i in test])) - 0.5) < 0.1
    assert abs(c_index(ts[test], es[test], cox_mean_pool(bags, ts, es, train, test)) - 0.5) < 0.1
