"""Summaries over seeds or folds: mean, standard deviation and a 95% t confidence interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .._markdown import to_markdown  # noqa: F401  (one implementation, used by every layer)


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float, float, int]:
    """(mean, std, ci_low, ci_high, n) of finite ``values`` (t interval; a single value has no interval)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return (np.nan, np.nan, np.nan, np.nan, 0)
    m = float(v.mean())
    if n == 1:
        return (m, np.nan, np.nan, np.nan, 1)
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n))
    return (m, sd, m - half, m + half, n)


def summarise(df: pd.DataFrame, by: list[str], value: str = "value") -> pd.DataFrame:
    """One row per group of ``by`` with mean, std, ci_low, ci_high and n of ``value``."""
    rows = []
    for key, g in df.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        m, sd, lo, hi, n = mean_ci(g[value])
        rows.append(dict(zip(by, key, strict=True)) | {"mean": m, "std": sd, "ci_low": lo, "ci_high": hi, "n": n})
    return pd.DataFrame(rows)


def long_table(rows) -> pd.DataFrame:
    """Rows (dicts or a DataFrame) in the long result schema (``RESULT_COLUMNS`` first, then any extra
    columns such as ``protocol`` or ``classes``); missing columns are empty, ``k``/``seed``/``fold`` strings."""
    from ._names import RESULT_COLUMNS

    df = pd.DataFrame(rows).copy()
    for c in RESULT_COLUMNS:
        if c not in df:
            df[c] = ""
    for c in ("k", "seed", "fold"):
        df[c] = df[c].astype(str)
    return df[list(RESULT_COLUMNS) + [c for c in df.columns if c not in RESULT_COLUMNS]]
