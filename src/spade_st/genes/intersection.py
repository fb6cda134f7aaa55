"""The paper's greedy gene intersection (SPADE_METHOD.md §1.1): walk the samples in the table's order and keep a
sample only while the running intersection of gene names stays at ``min_genes`` or more.

Only the gene names of each ``st/<id>.h5ad`` are read (its ``var`` index, through h5py): no matrix, so the
decision over all of HEST-1k takes seconds. Names are compared as :func:`~spade_st.genes.symbols.harmonise`
makes them (case-insensitive symbols), the same key the gene panel matches by.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .._validation import SpadeInputError
from .symbols import canonical, harmonise, unique_names


@dataclass(slots=True)
class GeneIntersectionConfig:
    """The ``gene_intersection:`` section of a pretraining config."""

    #: keep a sample only while the running intersection keeps at least this many genes (0: no intersection)
    min_genes: int = 0


def hvg_within(intersection: GeneIntersection | None, hvg_scope: str) -> list[str] | None:
    """The genes HVGs are chosen among: the intersection's under ``hvg_scope: intersection``, else None (each
    sample's own genes)."""
    return intersection.genes if (intersection is not None and hvg_scope == "intersection") else None


@dataclass
class GeneIntersection:
    """The samples the greedy walk kept, the ones it left out (with the size the intersection would have
    had), and the intersection's genes (harmonised, in the first kept sample's order)."""

    kept: list[str]
    dropped: dict[str, int] = field(default_factory=dict)  #: id -> intersection size had it been kept
    genes: list[str] = field(default_factory=list)
    min_genes: int = 0

    def to_dict(self) -> dict:
        return {"min_genes": self.min_genes, "kept": len(self.kept), "n_genes": len(self.genes)} | {
            "dropped": self.dropped
        }

    def summary(self) -> str:
        text = (
            f"gene intersection (>= {self.min_genes} genes): {len(self.kept)} sample(s) kept, "
            f"{len(self.genes)} genes in common"
        )
        if self.dropped:
            shown = ", ".join(f"{k} (would leave {v})" for k, v in list(self.dropped.items())[:10])
            more = f" and {len(self.dropped) - 10} more" if len(self.dropped) > 10 else ""
            text += f"; left out: {shown}{more}"
        return text


def read_gene_names(path: Path | str) -> np.ndarray:
    """The ``var`` index (gene names) of an h5ad, read without its matrix."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            var = f["var"]
            key = var.attrs.get("_index", "_index")
            key = key.decode() if isinstance(key, bytes) else str(key)
            names = var[key][()]
    except (OSError, KeyError) as err:
        msg = f"cannot read the gene names of {path} ({type(err).__name__}: {err}); is it an h5ad file?"
        raise SpadeInputError(msg) from err
    return np.array([n.decode() if isinstance(n, bytes) else str(n) for n in np.asarray(names).ravel()], dtype=object)


def intersect_genes(gene_lists: dict, min_genes: int, ensembl: dict | None = None) -> GeneIntersection:
    """Greedy running intersection over ``gene_lists`` (id -> gene names, or the path of an h5ad whose names
    are read without its matrix), walked in the mapping's order.

    A sample is kept when the intersection with it has at least ``min_genes`` genes; otherwise it is left
    out and the walk goes on with the next one. ``min_genes = 0`` keeps every sample (a plain intersection).
    """
    if min_genes < 0:
        msg = f"gene_intersection.min_genes must be >= 0 (0: keep every sample), got {min_genes}"
        raise SpadeInputError(msg)
    common: list[str] | None = None
    kept, dropped = [], {}
    for sid, names in gene_lists.items():
        if isinstance(names, str | Path):
            names = read_gene_names(names)
        names = unique_names(harmonise(names, ensembl))
        if common is None:
            candidate = names
        else:
            mine = {canonical(g) for g in names}
            candidate = [g for g in common if canonical(g) in mine]
        if len(candidate) >= min_genes:
            kept.append(sid)
            common = candidate
        else:
            dropped[sid] = len(candidate)
    if not kept:
        msg = (
            f"no sample has {min_genes} genes (gene_intersection.min_genes); the largest gene list has "
            f"{max(dropped.values(), default=0)}; lower min_genes"
        )
        raise SpadeInputError(msg)
    return GeneIntersection(kept=kept, dropped=dropped, genes=list(common or []), min_genes=min_genes)
