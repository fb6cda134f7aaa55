"""Linear and nearest-neighbour expression prediction: per-gene Pearson r, a ridge path with one SVD for every
penalty, the penalty chosen by leave-one-group-out CV, and the fitted ridge as explicit weights.

Used at training time (the model's expression head, :mod:`spade_st.experts.predictor`) and by every
evaluation (:mod:`spade_st.eval.genes`), so both measure and predict with the same arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class AlphaSearch:
    """The outcome of :func:`search_alpha`."""

    alpha: float  #: the chosen penalty
    alphas: np.ndarray  #: the grid searched (after widening)
    gene_r: np.ndarray  #: (G,) per-gene Pearson r at ``alpha``, mean over the held-out groups (NaN: constant)
    at_edge: bool  #: ``alpha`` is still the grid's smallest or largest value after widening
    widened: str = ""  #: "", "down" or "up": which end the grid was widened at


def _fold_scores(x_train, y_train, groups, alphas, criterion: str = "pearson") -> tuple[np.ndarray, np.ndarray]:
    """The criterion summed over folds (len(alphas),; higher is better) and per-gene r averaged over folds
    (len(alphas), G). ``pearson``: each fold's mean per-gene r; ``mse``: minus each fold's mean squared error."""
    uniq = np.unique(groups)
    if len(uniq) < 2:
        msg = "ridge_cv needs at least two groups of training rows (sections or spatial blocks) to choose alpha"
        raise SpadeInputError(msg)
    score = np.zeros(len(alphas))
    gsum = np.zeros((len(alphas), y_train.shape[1]))
    gcnt = np.zeros((len(alphas), y_train.shape[1]))
    for g in uniq:
        te = groups == g
        preds = _ridge_path(x_train[~te], y_train[~te], x_train[te], alphas)
        for i, p in enumerate(preds):
            r = pearson_per_gene(p, y_train[te])
            ok = np.isfinite(r)
            if criterion == "mse":
                score[i] -= float(((p - y_train[te]) ** 2).mean())
            else:
                score[i] += r[ok].mean() if ok.any() else 0.0  # all-constant: no vote
            gsum[i, ok] += r[ok]
            gcnt[i, ok] += 1
    with np.errstate(invalid="ignore"):
        return score, np.where(gcnt > 0, gsum / np.maximum(gcnt, 1), np.nan)


def search_alpha(
    x_train, y_train, groups, alphas=ALPHAS, widen: bool = True, criterion: str = "pearson"
) -> AlphaSearch:
    """The penalty with the best score over leave-one-group-out folds, and each gene's Pearson r there.

    ``criterion``: ``pearson`` (mean per-gene r, the evaluations' measure) or ``mse`` (mean squared error: the
    predictions keep the measured scale; Pearson r alone favours ever larger penalties, whose predictions
    shrink towards a constant while their correlation holds). With ``widen``, a penalty at either end of the grid extends the grid once by four decades at that end
    (8 more values) and searches again; one still at the end is reported (``at_edge``).
    """
    x_train, y_train = np.asarray(x_train, np.float64), np.asarray(y_train, np.float64)
    groups = np.asarray(groups)
    alphas = np.asarray(alphas, np.float64)
    if criterion not in ("pearson", "mse"):
        msg = f"unknown alpha criterion {criterion!r}: use 'pearson' or 'mse'"
        raise ValueError(msg)
    score, gene_r = _fold_scores(x_train, y_train, groups, alphas, criterion)
    best = int(np.argmax(score))
    widened = ""
    if widen and best in (0, len(alphas) - 1):
        lo, hi = np.log10(alphas[0]), np.log10(alphas[-1])
        widened = "down" if best == 0 else "up"
        more = np.logspace(lo - 4, lo, 9)[:-1] if best == 0 else np.logspace(hi, hi + 4, 9)[1:]
        s2, r2 = _fold_scores(x_train, y_train, groups, more, criterion)
        alphas = np.concatenate([more, alphas] if best == 0 else [alphas, more])
        score = np.concatenate([s2, score] if best == 0 else [score, s2])
        gene_r = np.concatenate([r2, gene_r] if best == 0 else [gene_r, r2])
        best = int(np.argmax(score))
    return AlphaSearch(
        alpha=float(alphas[best]),
        alphas=alphas,
        gene_r=gene_r[best],
        at_edge=best in (0, len(alphas) - 1),
        widened=widened,
    )


def choose_alpha(x_train, y_train, groups, alphas=ALPHAS) -> float:
    """The penalty of ``alphas`` with the best mean per-gene Pearson r over leave-one-group-out folds (no
    widening: the evaluations search one fixed grid)."""
    return search_alpha(x_train, y_train, groups, alphas, widen=False).alpha


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
