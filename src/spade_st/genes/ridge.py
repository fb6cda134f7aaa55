"""Linear and nearest-neighbour expression prediction: per-gene Pearson r, a ridge path with one SVD for every
penalty, the penalty chosen by leave-one-group-out CV, and the fitted ridge as explicit weights.

Used at training time (the model's expression head, :mod:`spade_st.experts.predictor`) and by every
evaluation (:mod:`spade_st.eval.genes`), so both measure and predict with the same arithmetic.
"""

from __future__ import annotations

import numpy as np

from .._validation import SpadeInputError

#: ridge penalties searched by :func:`ridge_cv` (standardised inputs, so the scale is comparable across sources)
ALPHAS = np.logspace(-2, 6, 17)


def pearson_per_gene(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Pearson r per column; NaN where either side is constant."""
    p = pred - pred.mean(0)
    t = truth - truth.mean(0)
    den = np.sqrt((p**2).sum(0) * (t**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (p * t).sum(0) / den, np.nan)


def mean_pearson(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over genes of :func:`pearson_per_gene`, skipping constant genes; NaN if every gene is constant."""
    r = pearson_per_gene(pred, truth)
    r = r[np.isfinite(r)]
    return float(r.mean()) if len(r) else float("nan")


def _svd_parts(x_train, y_train):
    mu, sd = x_train.mean(0), x_train.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    u, s, vt = np.linalg.svd((x_train - mu) / sd, full_matrices=False)
    ym = y_train.mean(0)
    return mu, sd, s, vt, u.T @ (y_train - ym), ym


def ridge_weights(x_train, y_train, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge on standardised inputs with intercept, as weights on the ORIGINAL inputs: ``pred = x @ W + b``.

    Returns ``(W (D, G), b (G,))``; the same solution as :func:`ridge_cv`'s final fit.
    """
    x_train, y_train = np.asarray(x_train, np.float64), np.asarray(y_train, np.float64)
    mu, sd, s, vt, uty, ym = _svd_parts(x_train, y_train)
    w = (vt.T @ ((s / (s**2 + alpha))[:, None] * uty)) / sd[:, None]
    return w, ym - mu @ w


def _ridge_path(x_train, y_train, x_test, alphas) -> np.ndarray:
    """Predictions (len(alphas), n_test, G) of standardised ridge regressions with intercept, one SVD for all."""
    mu, sd, s, vt, uty, ym = _svd_parts(x_train, y_train)
    proj = ((x_test - mu) / sd) @ vt.T
    return np.stack([proj @ ((s / (s**2 + a))[:, None] * uty) + ym for a in alphas])


def choose_alpha(x_train, y_train, groups, alphas=ALPHAS) -> float:
    """The penalty of :data:`ALPHAS` with the best mean per-gene Pearson r over leave-one-group-out folds."""
    x_train, y_train = np.asarray(x_train, np.float64), np.asarray(y_train, np.float64)
    groups = np.asarray(groups)
    uniq = np.unique(groups)
    if len(uniq) < 2:
        msg = "ridge_cv needs at least two groups of training rows (sections or spatial blocks) to choose alpha"
        raise SpadeInputError(msg)
    score = np.zeros(len(alphas))
    for g in uniq:
        te = groups == g
        preds = _ridge_path(x_train[~te], y_train[~te], x_train[te], alphas)
        score += [np.nan_to_num(mean_pearson(p, y_train[te]), nan=0.0) for p in preds]  # all-constant: no vote
    return float(alphas[int(np.argmax(score))])


def ridge_cv(x_train, y_train, x_test, groups, alphas=ALPHAS) -> tuple[np.ndarray, float]:
    """Ridge (standardised inputs, intercept, no PCA) whose alpha maximises the mean per-gene Pearson r over
    leave-one-group-out folds of the training rows (``groups``: sections, or spatial blocks of one section).

    The test rows take no part in choosing alpha. Returns (predictions, chosen alpha).
    """
    x_train, y_train = np.asarray(x_train, np.float64), np.asarray(y_train, np.float64)
    best = choose_alpha(x_train, y_train, groups, alphas)
    return _ridge_path(x_train, y_train, np.asarray(x_test, np.float64), [best])[0], best


def knn_expression(query: np.ndarray, keys: np.ndarray, y_keys: np.ndarray, k: int = 50) -> np.ndarray:
    """BLEEP-style prediction: mean expression of the ``k`` keys (gene embeddings of training spots, or
    prototypes of them) with the highest dot product with each query image embedding."""
    k = min(k, len(keys))
    sim = query @ keys.T
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    return y_keys[top].mean(1)
