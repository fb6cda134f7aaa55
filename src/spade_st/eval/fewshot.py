"""Few-shot patch classification: k shots per class, many seeds; logistic, kNN (cosine) and SimpleShot probes."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.preprocessing import StandardScaler

PROBES = ("logistic", "knn", "simpleshot")
DEFAULT_K = (1, 2, 4, 8, 16, 32)


def sample_shots(y: np.ndarray, k: int, seed: int, classes) -> tuple[np.ndarray, np.ndarray]:
    """Indices of exactly k training shots per class and the rest (the test set).

    Every class in ``classes`` must have at least k + 1 examples (k shots and one to test):
    :func:`eligible_classes` chooses them.
    """
    rng = np.random.default_rng(seed)
    train = []
    for c in classes:
        idx = np.flatnonzero(y == c)
        if len(idx) < k + 1:
            msg = f"class {c!r} has {len(idx)} examples: it cannot give {k} shots and a test example"
            raise ValueError(msg)
        train.extend(rng.choice(idx, size=k, replace=False).tolist())
    train = np.array(sorted(train), dtype=np.int64)
    test = np.setdiff1d(np.arange(len(y)), train)
    return train, test


def eligible_classes(y: np.ndarray, k: int) -> list[str]:
    """Classes with at least k + 1 examples: the ones that can give k shots and a test example."""
    counts = pd.Series(y).value_counts()
    return sorted(str(c) for c in counts[counts >= k + 1].index)


def _scores_to_proba(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def fit_predict(probe: str, xtr, ytr, xte, classes, seed: int = 0) -> np.ndarray:
    """Class probabilities (n_test, n_classes) from a probe trained on the shots only."""
    if probe == "logistic":
        sc = StandardScaler().fit(xtr)
        xt, xv = sc.transform(xtr), sc.transform(xte)
        base = LogisticRegression(max_iter=2000)
        min_count = min(np.sum(ytr == c) for c in classes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if min_count >= 2:  # C by inner CV on the shots only
                cv = StratifiedKFold(n_splits=min(min_count, 3), shuffle=True, random_state=seed)
                model = GridSearchCV(base, {"C": np.logspace(-3, 2, 6)}, cv=cv, scoring="balanced_accuracy")
            else:
                model = base.set_params(C=1.0)
            model.fit(xt, ytr)
        p = model.predict_proba(xv)
        order = [list(model.classes_).index(c) for c in classes]
        return p[:, order]
    if probe == "knn":
        a = xtr / np.linalg.norm(xtr, axis=1, keepdims=True).clip(1e-12)
        b = xte / np.linalg.norm(xte, axis=1, keepdims=True).clip(1e-12)
        sim = b @ a.T
        k = max(1, min(5, len(xtr)))
        top = np.argsort(-sim, axis=1)[:, :k]
        votes = np.zeros((len(xte), len(classes)))
        for j, c in enumerate(classes):
            votes[:, j] = ((ytr[top] == c) * np.take_along_axis(sim, top, 1)).sum(1)
        return _scores_to_proba(votes * 10)
    if probe == "simpleshot":  # centre on the shots' mean, L2-normalise, nearest class prototype
        mu = xtr.mean(0)

        def norm(z):
            z = z - mu
            return z / np.linalg.norm(z, axis=1, keepdims=True).clip(1e-12)

        a, b = norm(xtr), norm(xte)
        protos = np.stack([a[ytr == c].mean(0) for c in classes])
        d = ((b[:, None, :] - protos[None]) ** 2).sum(-1)
        return _scores_to_proba(-d * 10)
    msg = f"unknown probe {probe!r}; choose from {PROBES}"
    raise ValueError(msg)


def metrics(y: np.ndarray, proba: np.ndarray, classes) -> dict[str, float]:
    pred = np.asarray(classes, dtype=object)[proba.argmax(1)]
    out = {
        "balanced_accuracy": balanced_accuracy_score(y, pred),
        "macro_f1": f1_score(y, pred, average="macro", labels=list(classes), zero_division=0),
    }
    present = [j for j, c in enumerate(classes) if (y == c).any()]
    if len(present) >= 2:
        p = proba[:, present] / proba[:, present].sum(1, keepdims=True).clip(1e-12)
        labels = [classes[j] for j in present]
        if len(present) == 2:
            out["macro_auroc"] = roc_auc_score(y == labels[1], p[:, 1])
        else:
            out["macro_auroc"] = roc_auc_score(y, p, multi_class="ovr", average="macro", labels=labels)
    else:
        out["macro_auroc"] = np.nan
    return out


def few_shot(
    x: np.ndarray, y: np.ndarray, ks=DEFAULT_K, seeds: int = 20, probes=PROBES, progress: bool = False, desc: str = ""
) -> pd.DataFrame:
    """Long table (probe, k, seed, metric, value, classes).

    At each k only the classes with at least k + 1 labelled examples enter (k shots and a test example); the
    ``classes`` column lists them (``;``-joined). A k at which fewer than two classes qualify is skipped. The
    same shots (per k and seed) are used for every probe and, when called per source with the same labels, for
    every embedding source. ``progress``: a bar over the (k, seed) draws, titled ``desc``.
    """
    from .._progress import progress as bar

    y = np.asarray(y, dtype=object)
    keep = pd.notna(y)
    x, y = np.asarray(x)[keep], y[keep].astype(str)
    rows = []
    draws = bar(total=len(ks) * seeds, desc=desc or "few-shot", unit="draw", disable=not progress)
    for k in ks:
        classes = eligible_classes(y, k)
        if len(classes) < 2:
            draws.update(seeds)
            continue
        m = np.isin(y, classes)
        xk, yk = x[m], y[m]
        for seed in range(seeds):
            draws.set_postfix_str(f"k = {k}")
            draws.update(1)
            tr, te = sample_shots(yk, k, seed, classes)
            for probe in probes:
                proba = fit_predict(probe, xk[tr], yk[tr], xk[te], classes, seed)
                for name, v in metrics(yk[te], proba, classes).items():
                    rows.append(
                        {
                            "probe": probe,
                            "k": k,
                            "seed": seed,
                            "metric": name,
                            "value": float(v),
                            "classes": ";".join(classes),
                        }
                    )
    draws.close()
    return pd.DataFrame(rows, columns=["probe", "k", "seed", "metric", "value", "classes"])


def result_rows(res: pd.DataFrame, **columns) -> pd.DataFrame:
    """:func:`few_shot`'s table in the long result schema: each draw (its ``seed``) is a ``fold`` named
    ``shots<i>``; ``columns`` (source, task, and the pretraining ``seed`` where there is one) go on every row."""
    return res.assign(fold="shots" + res["seed"].astype(str), seed="").assign(**columns)
