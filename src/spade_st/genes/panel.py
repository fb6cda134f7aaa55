"""The gene panel: per-sample top-N highly variable genes, united BY NAME across training samples.

For each training sample: ``normalize_total(1e4)`` + ``log1p`` + ``highly_variable_genes(flavor="seurat",
n_top_genes=N)`` (scanpy; SPADE uses N = 50). The panel is the union of those genes by harmonised symbol
(case-insensitive, duplicates summed, optional Ensembl -> symbol table). A panel gene absent from a sample is
zeros there, and counted in the report. The gene-head input is ``log1p(CP10k)`` of the panel, with library
size over ALL of the sample's genes (``mode="log1p"``, default) or the raw panel counts as the released
SPADE code fed them (``mode="raw"``).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._atomic import atomic_write_json
from .._validation import SpadeInputError
from .symbols import canonical, check_id_kind, check_one_id_kind, harmonise, sum_duplicates

#: pseudo-gene of a panel: the gene head also gets log1p(the spot's total counts over all genes)
LIBRARY_SIZE = "__log1p_library_size__"


@dataclass
class GenePanel:
    """An ordered list of canonical gene symbols and how expression is fed to the gene heads."""

    genes: list[str]
    mode: str = "log1p"  #: "log1p" (log1p CP10k) or "raw" (raw counts, as the released code)
    n_top: int = 50
    flavor: str = "seurat"
    target_sum: float = 1e4
    #: genes the HVGs were chosen among: 0 = each sample's own genes; n = the n genes of a gene intersection
    within: int = 0
    per_sample: dict[str, list[str]] = field(default_factory=dict)  #: each sample's own top genes
    missing: dict[str, int] = field(default_factory=dict)  #: panel genes absent per sample (filled by transform)

    def __len__(self) -> int:
        return len(self.genes)

    def to_json(self, path: Path | str) -> None:
        atomic_write_json(path, asdict(self))

    @classmethod
    def from_json(cls, path: Path | str) -> GenePanel:
        return cls(**json.loads(Path(path).read_text()))

    def transform(self, adata, sample_id: str = "", ensembl: dict | None = None) -> np.ndarray:
        """Gene-head input (n_spots, len(panel)) float32 of one sample's raw counts."""
        names = harmonise(adata.var_names, ensembl)
        check_id_kind(names, [g for g in self.genes if g != LIBRARY_SIZE], f"sample {sample_id or '(unnamed)'}")
        X = sp.csr_matrix(adata.X, dtype=np.float64)
        X, names = sum_duplicates(X, names)
        lib = np.asarray(X.sum(axis=1)).ravel()
        pos = {canonical(g): i for i, g in enumerate(names)}
        idx = np.array([pos.get(canonical(g), -1) for g in self.genes])
        have = idx >= 0
        out = np.zeros((X.shape[0], len(self.genes)), dtype=np.float64)
        out[:, have] = X[:, idx[have]].toarray()
        if self.mode == "log1p":
            scale = np.where(lib > 0, self.target_sum / np.maximum(lib, 1e-12), 0.0)
            out = np.log1p(out * scale[:, None])
        elif self.mode != "raw":
            msg = f"gene panel mode must be 'log1p' or 'raw', got {self.mode!r}"
            raise ValueError(msg)
        lib_col = np.asarray(self.genes) == LIBRARY_SIZE
        out[:, lib_col] = np.log1p(lib)[:, None]  # sequencing depth as one more input, in either mode
        if sample_id:
            self.missing[sample_id] = int((~have & ~lib_col).sum())
        return out.astype(np.float32)

    def with_library_size(self, on: bool = True) -> GenePanel:
        """This panel with (or without) the :data:`LIBRARY_SIZE` input as its last column."""
        genes = [g for g in self.genes if g != LIBRARY_SIZE] + ([LIBRARY_SIZE] if on else [])
        return GenePanel(**(asdict(self) | {"genes": genes}))


def expression_target(adata, genes: list[str]) -> np.ndarray:
    """log1p(counts per 10k) of ``genes`` (by name; zeros where the sample lacks one), spots x genes: what the
    expression head predicts and what its maps are compared with."""
    return GenePanel(genes=list(genes), mode="log1p").transform(adata)


def sample_hvgs(
    adata, n_top: int = 50, flavor: str = "seurat", target_sum: float = 1e4, ensembl=None, within=None
) -> list[str]:
    """Top ``n_top`` highly variable genes of one sample (harmonised symbols).

    ``within``: harmonised gene names to choose among (the paper: the gene intersection of all its slides);
    the sample is restricted to them before normalising, as the paper did. None: all of the sample's genes.
    """
    import anndata as ad

    from .._optional import require

    sc = require("scanpy", "scanpy", "genes")

    X, names = sum_duplicates(sp.csr_matrix(adata.X, dtype=np.float32), harmonise(adata.var_names, ensembl))
    keep = np.asarray(X.sum(axis=0)).ravel() > 0
    if within is not None:
        keys = np.array([canonical(n) for n in names], dtype=str)
        keep &= np.isin(keys, np.asarray(sorted({canonical(w) for w in within}), dtype=str))
    a = ad.AnnData(X=X[:, keep].astype(np.float32), var=pd.DataFrame(index=pd.Index(names[keep].astype(str))))
    if a.n_obs < 2 or a.n_vars < 2:
        msg = (
            f"sample has {a.n_obs} spots and {a.n_vars} expressed genes; highly variable genes need at least 2 of each"
        )
        raise SpadeInputError(msg)
    sc.pp.normalize_total(a, target_sum=target_sum)
    sc.pp.log1p(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # constant genes give NaN dispersions
        sc.pp.highly_variable_genes(a, n_top_genes=min(n_top, a.n_vars), flavor=flavor)
    hv = a.var[a.var["highly_variable"]]
    order = hv["dispersions_norm"].sort_values(ascending=False, kind="stable").index
    return [str(g) for g in order]


def build_panel(
    samples, n_top: int = 50, mode: str = "log1p", flavor: str = "seurat", ensembl=None, within=None
) -> GenePanel:
    """Union by name of each sample's top-``n_top`` HVGs (samples: objects with ``.id`` and ``.adata``).

    ``within``: the gene names to choose HVGs among (see :func:`sample_hvgs`); None: each sample's own."""
    per, seen = {}, {}
    within = None if within is None else set(within)
    for s in samples:
        try:
            genes = sample_hvgs(s.adata, n_top, flavor, ensembl=ensembl, within=within)
        except SpadeInputError as err:
            msg = f"sample {s.id}: {err}"
            raise SpadeInputError(msg) from err
        per[s.id] = genes
        for g in genes:
            seen.setdefault(canonical(g), g)  # the first spelling of a gene stays its name
    if not seen:
        msg = "no highly variable genes found: are the training samples empty?"
        raise SpadeInputError(msg)
    check_one_id_kind(seen.values(), "the gene panel (the union of the samples' top genes)")
    return GenePanel(
        genes=list(seen.values()), mode=mode, n_top=n_top, flavor=flavor, within=len(within or ()), per_sample=per
    )


def panel_report(panel: GenePanel) -> pd.DataFrame:
    """Per sample: own top genes, panel genes missing (zeros) there."""
    ids = sorted(set(panel.per_sample) | set(panel.missing))
    return pd.DataFrame(
        {
            "sample": ids,
            "own_hvgs": [len(panel.per_sample.get(i, [])) for i in ids],
            "panel_genes_missing": [panel.missing.get(i, np.nan) for i in ids],
            "panel_size": len(panel),
        }
    )
