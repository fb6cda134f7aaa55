"""Synthetic slide bags with a planted signal, for slide-level model tests and demos."""

from __future__ import annotations

import numpy as np


def planted_bags(
    n_slides: int = 60,
    dim: int = 32,
    n_classes: int = 2,
    seed: int = 0,
    witness: float = 0.15,
    shift: float = 2.0,
    n_instances: tuple[int, int] = (30, 80),
):
    """Bags of Gaussian instances; in a bag of class c > 0 a fraction ``witness`` of instances is shifted by
    ``shift`` along class c's own direction. Also returns survival times whose hazard grows with the fraction
    of instances along direction 1 (events ~70%).

    Returns ``bags`` (list of (n_i, dim) float32), ``labels`` (n_slides,), ``times``, ``events``.
    """
    rng = np.random.default_rng(seed)
    dirs = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:, :n_classes]
    labels = np.arange(n_slides) % n_classes
    rng.shuffle(labels)
    bags, load = [], []
    for c in labels:
        n = int(rng.integers(*n_instances))
        x = rng.normal(size=(n, dim))
        frac = witness if c > 0 else 0.0
        surv_frac = float(rng.choice([0.0, 0.15, 0.3]))  # risk groups: none, some, many witnesses
        k, ks = round(frac * n), round(surv_frac * n)
        if k:
            x[:k] += shift * dirs[:, c]
        if ks:
            x[n - ks :] += shift * dirs[:, 0]
        bags.append(x.astype(np.float32))
        load.append(surv_frac)
    hazard = 0.05 * np.exp(10.0 * np.asarray(load))
    t_event = rng.exponential(1 / hazard)
    t_cens = rng.exponential(1 / (0.4 * hazard.mean()), size=n_slides)
    times = np.minimum(t_event, t_cens)
    events = (t_event <= t_cens).astype(np.int64)
    return bags, labels, times, events
