"""Gene-symbol harmonisation: case, duplicates, optional Ensembl -> symbol table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._validation import SpadeInputError


def read_ensembl_table(path: Path | str) -> dict[str, str]:
    """A two-column table (CSV/TSV: Ensembl id, symbol) as a dict; version suffixes (``.12``) are ignored."""
    p = Path(path)
    try:
        df = pd.read_csv(p, sep=None, engine="python", header=None, dtype=str, comment="#")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        msg = f"cannot read the Ensembl table {p}: {err}; expected two columns: ensembl_id, symbol"
        raise SpadeInputError(msg) from err
    if df.shape[1] < 2:
        msg = f"Ensembl table {p} needs two columns (ensembl_id, symbol), found {df.shape[1]}"
        raise SpadeInputError(msg)
    ids = df.iloc[:, 0].str.split(".").str[0]
    return dict(zip(ids, df.iloc[:, 1], strict=True))


def canonical(name: str) -> str:
    """The matching key of a gene name (upper case, stripped): ``Actb``, ``ACTB`` and ``actb`` match."""
    return str(name).strip().upper()


def match_names(wanted, available) -> list:
    """Each name of ``wanted`` as it is spelled in ``available`` (matched by :func:`canonical`: any case), or
    None where ``available`` has no such gene. The one case-insensitive gene lookup of spade-st."""
    exact, by_key = set(available), {}
    for name in available:
        by_key.setdefault(canonical(name), name)
    return [name if name in exact else by_key.get(canonical(name)) for name in wanted]


def harmonise(names, ensembl: dict[str, str] | None = None) -> np.ndarray:
    """Map names to canonical symbols (Ensembl ids through ``ensembl`` first)."""
    out = []
    for n in names:
        s = str(n).strip()
        if ensembl and s.upper().startswith("ENS"):
            s = ensembl.get(s.split(".")[0], s)
        out.append(canonical(s))
    return np.asarray(out, dtype=object)


def sum_duplicates(X, names: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Columns with the same (harmonised) name summed; returns (X', unique names in first-seen order)."""
    names = np.asarray(names, dtype=object)
    uniq, first, inverse = np.unique(names.astype(str), return_index=True, return_inverse=True)
    order = np.argsort(first)  # keep first-seen order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    cols = rank[inverse]
    agg = sp.csr_matrix((np.ones(len(names)), (np.arange(len(names)), cols)), shape=(len(names), len(uniq)))
    Xc = sp.csr_matrix(X) @ agg
    return Xc.tocsr(), uniq[order].astype(object)
