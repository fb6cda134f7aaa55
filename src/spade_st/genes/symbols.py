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
    """Names as symbols, stripped, in their own case (Ensembl ids through ``ensembl`` first); compare them with
    :func:`canonical`."""
    out = []
    for n in names:
        s = str(n).strip()
        if ensembl and s.upper().startswith("ENS"):
            s = ensembl.get(s.split(".")[0], s)
        out.append(s)
    return np.asarray(out, dtype=object)


def is_ensembl(name) -> bool:
    """True for an Ensembl gene id (``ENSG00000141510``, ``ENSMUSG…``, with or without a version)."""
    n = str(name).strip().upper()
    return n.startswith("ENS") and any(c.isdigit() for c in n[3:8]) and n.split(".")[0][-6:].isdigit()


def check_id_kind(names, panel_genes, source: str) -> None:
    """Refuse a sample that names its genes by Ensembl id against a panel of symbols (or the reverse): they would
    match no gene and every column would be zero."""
    names = list(names)
    if not names or not panel_genes:
        return
    mine = np.mean([is_ensembl(n) for n in names]) > 0.5
    theirs = np.mean([is_ensembl(g) for g in panel_genes]) > 0.5
    if mine != theirs:
        kind, other = ("Ensembl ids", "symbols") if mine else ("symbols", "Ensembl ids")
        msg = (
            f"{source} names its genes by {kind} (e.g. {names[0]}) but the gene panel uses {other} (e.g. "
            f"{panel_genes[0]}); set var_names to {other} (e.g. adata.var_names = adata.var['gene_symbols']) and "
            "convert it again"
        )
        raise SpadeInputError(msg)


def check_one_id_kind(names, source: str) -> None:
    """Refuse a gene list that mixes Ensembl ids and symbols (the same gene would be two unrelated columns)."""
    names = list(names)
    ens = [n for n in names if is_ensembl(n)]
    if ens and len(ens) < len(names):
        sym = next(n for n in names if not is_ensembl(n))
        msg = (
            f"{source} mixes {len(ens)} Ensembl ids (e.g. {ens[0]}) with {len(names) - len(ens)} symbols (e.g. {sym}); "
            "name every sample's genes the same way (symbols: adata.var_names = adata.var['gene_symbols']) and "
            "convert again"
        )
        raise SpadeInputError(msg)


def unique_names(names) -> list[str]:
    """Names without repeats by :func:`canonical` (any case), each as first spelled, in first-seen order."""
    seen = {}
    for n in names:
        seen.setdefault(canonical(n), str(n))
    return list(seen.values())


def sum_duplicates(X, names: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Columns with the same name in any case summed; returns (X', unique names as first spelled, first-seen
    order)."""
    names = np.asarray(names, dtype=object)
    keys = np.array([canonical(n) for n in names], dtype=str)
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    uniq = names[first]
    order = np.argsort(first)  # keep first-seen order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    cols = rank[inverse]
    agg = sp.csr_matrix((np.ones(len(names)), (np.arange(len(names)), cols)), shape=(len(names), len(uniq)))
    Xc = sp.csr_matrix(X) @ agg
    return Xc.tocsr(), uniq[order].astype(object)
