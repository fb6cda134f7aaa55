"""The samples a pretraining config trains on: the table's rules (``samples:``), the samples on disk, ``--exclude``
and the greedy gene intersection (``gene_intersection:``), decided before any matrix or patch is read.

Order: the selection rules on the sample table; for HEST's own table (a partial download), the selected samples
that have ``st/<id>.h5ad``; the excluded ids set aside (they stay in the split as ``excluded``); the gene
intersection walked over the rest in the table's order. Every step is reported.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from .. import _keys as K
from .._validation import SpadeInputError
from ..genes.intersection import GeneIntersection, intersect_genes
from ..io.layout import Layout, read_metadata
from ..io.selection import SelectionResult, select_samples
from .config import PretrainConfig


@dataclass
class Cohort:
    """What :func:`resolve_cohort` decided."""

    ids: list[str]  #: samples that enter the split (training candidates plus the excluded ones), table order
    exclude: list[str]  #: the excluded ids among them
    selection: SelectionResult
    absent: list[str] = field(default_factory=list)  #: selected, but not on disk (HEST table only)
    intersection: GeneIntersection | None = None
    not_selected_excludes: list[str] = field(default_factory=list)  #: --exclude ids the rules dropped anyway

    @property
    def train_candidates(self) -> list[str]:
        return [i for i in self.ids if i not in set(self.exclude)]

    def to_dict(self) -> dict:
        out = {"selection": self.selection.to_dict(), "absent": self.absent, "n_samples": len(self.ids)}
        if self.intersection is not None:
            out["gene_intersection"] = self.intersection.to_dict()
        return out

    def summary(self) -> str:
        lines = [self.selection.summary()]
        if self.absent:
            lines.append(
                f"{len(self.absent)} selected sample(s) have no st/<id>.h5ad in the root (not downloaded): "
                + ", ".join(self.absent[:10])
                + (" ..." if len(self.absent) > 10 else "")
            )
        if self.not_selected_excludes:
            lines.append(f"--exclude {' '.join(self.not_selected_excludes)}: dropped by the rules anyway")
        if self.intersection is not None:
            lines.append(self.intersection.summary())
        return "\n".join(lines)


def resolve_cohort(cfg: PretrainConfig, table=None, need_files: bool = True) -> Cohort:
    """Apply the config's sample rules, ``--exclude`` and gene intersection to ``cfg.data``'s table.

    ``table``: the sample table (default: read from ``cfg.data``). ``need_files=False`` (a dry run) skips
    everything that reads a file besides the table: the presence check and the gene intersection.
    """
    root = cfg.data
    lay = Layout(root) if root is not None else None
    if table is None:
        table = read_metadata(root)
    where = lay.table_path().name if lay is not None and lay.table_path() is not None else "sample table"
    sel = select_samples(table, cfg.samples, where)
    known = set(table.index.astype(str))
    unknown = sorted(set(cfg.exclude) - known)
    if unknown:
        msg = f"--exclude names sample(s) not in the data: {', '.join(unknown)}"
        raise SpadeInputError(msg)
    ids, absent = list(sel.kept), []
    if need_files and lay is not None and lay.table_path().name != K.METADATA_CSV:
        absent = [i for i in ids if not lay.st(i).is_file()]
        ids = [i for i in ids if i not in set(absent)]
        if not ids:
            msg = f"none of the {len(sel.kept)} selected samples has st/<id>.h5ad in {root}; download them first"
            raise FileNotFoundError(msg)
    dropped_ex = [e for e in cfg.exclude if e not in set(ids)]
    exclude = [e for e in cfg.exclude if e in set(ids)]
    inter = None
    gi = cfg.gene_intersection.min_genes
    if need_files and (gi > 0 or cfg.hvg_scope == "intersection"):
        walk = {i: lay.st(i) for i in ids if i not in set(exclude)}
        if not walk:
            msg = "every selected sample is excluded: nothing left to train on"
            raise SpadeInputError(msg)
        inter = intersect_genes(walk, gi)
        ids = [i for i in ids if i in set(exclude) or i in set(inter.kept)]
    return Cohort(ids, exclude, sel, absent, inter, dropped_ex)


def print_cohort(cohort: Cohort, progress: bool = True) -> None:
    """The cohort's tables on stderr (the pretrain log), when anything was filtered."""
    if progress and (cohort.selection.selection.active or cohort.intersection is not None or cohort.absent):
        print(cohort.summary(), file=sys.stderr)
