"""Which samples of a HEST table enter a run: rules on the table's own columns, applied before any file is read.

SPADE's HEST-1k recipe (SPADE_METHOD.md §1.1) is ``st_technology: [Visium]``, ``species: [Homo sapiens]``,
``exclude_organs: [Brain, Embryo, Lung/Brain, Kidney/Brain]``, ``min_nb_genes: 10000`` (``nb_genes > 10000``),
``exclude_ids: [INT17]``; on the samples HEST v1.0.0 released (``hest_version: v1_0_0``) it keeps 293.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._atomic import plain
from .._validation import SpadeInputError


@dataclass(slots=True)
class SampleSelection:
    """Rules on the sample table, applied in the order of the fields; each unset rule keeps every sample.

    String rules compare case-insensitively after stripping spaces; a sample whose value is missing fails a
    rule that names values (``st_technology``, ``species``, ``organs``, ``hest_version``, ``min_nb_genes``).
    """

    ids: list[str] | None = None  #: keep only these ids (None: every id of the table)
    hest_version: list[str] | None = None  #: ``hest_version_added`` in this list, e.g. [v1_0_0] (the paper's)
    st_technology: list[str] | None = None  #: ``st_technology`` in this list, e.g. [Visium]
    species: list[str] | None = None  #: ``species`` in this list, e.g. [Homo sapiens]
    organs: list[str] | None = None  #: ``organ`` in this list (None: every organ)
    exclude_organs: list[str] = field(default_factory=list)  #: ``organ`` not in this list
    min_nb_genes: int | None = None  #: ``nb_genes`` greater than this (the paper: > 10000)
    exclude_ids: list[str] = field(default_factory=list)  #: ids dropped by name

    @property
    def active(self) -> bool:
        """Whether any rule is set."""
        return any(_rule_values(self, name) is not None for name, _ in RULES)


#: rule -> the table column it reads
RULES = (
    ("ids", "id"),
    ("hest_version", "hest_version_added"),
    ("st_technology", "st_technology"),
    ("species", "species"),
    ("organs", "organ"),
    ("exclude_organs", "organ"),
    ("min_nb_genes", "nb_genes"),
    ("exclude_ids", "id"),
)


def _rule_values(sel: SampleSelection, name: str):
    v = getattr(sel, name)
    if name.startswith("exclude_"):
        return v or None
    return v


def _norm(values) -> pd.Series:
    return pd.Series(values, dtype=object).map(lambda v: str(v).strip().lower() if pd.notna(v) else None)


@dataclass
class SelectionResult:
    """What :func:`select_samples` kept and why the others went.

    ``rules``: one row per active rule (rule, value, column, before, dropped, after); ``organs``: per organ,
    samples in the table, kept, and their ``spots_under_tissue`` where the table has it.
    """

    kept: list[str]
    dropped: dict[str, str]  #: id -> the first rule that dropped it
    rules: pd.DataFrame
    organs: pd.DataFrame
    selection: SampleSelection

    def to_dict(self) -> dict:
        return {
            "rules": plain(self.selection),
            "kept": len(self.kept),
            "dropped_by_rule": {str(r["rule"]): int(r["dropped"]) for r in self.rules.to_dict("records")},
            "per_organ": {str(r["organ"]): int(r["kept"]) for r in self.organs.to_dict("records")},
        }

    def summary(self) -> str:
        """The tables as text (what the CLI prints)."""
        from .._markdown import to_markdown

        head = f"samples: {len(self.kept)} of {len(self.kept) + len(self.dropped)} kept"
        parts = [head]
        if len(self.rules):
            parts.append(to_markdown(self.rules))
        parts.append(to_markdown(self.organs))
        return "\n".join(parts)


def select_samples(
    table: pd.DataFrame, selection: SampleSelection | None, where: str = "sample table"
) -> SelectionResult:
    """Apply ``selection`` to a sample table (indexed by id, HEST column names), in the table's order.

    Raises
    ------
    SpadeInputError
        A rule reads a column the table does not have (naming the rule and the fix), or nothing is kept.
    """
    sel = selection or SampleSelection()
    ids = table.index.astype(str).to_numpy()
    alive = np.ones(len(ids), bool)
    dropped: dict[str, str] = {}
    rows = []
    for name, col in RULES:
        value = _rule_values(sel, name)
        if value is None:
            continue
        if col != "id" and col not in table.columns:
            msg = (
                f"samples.{name} filters on the column {col!r}, which the {where} does not have; "
                f"add the column to the table or remove '{name}' from the config's samples: section"
            )
            raise SpadeInputError(msg)
        column = pd.Series(ids, dtype=object) if col == "id" else table[col].reset_index(drop=True)
        if name == "min_nb_genes":
            num = pd.to_numeric(column, errors="coerce")
            ok = (num > float(value)).fillna(False).to_numpy(bool)
            shown = f"> {value}"
        else:
            wanted = set(_norm(value if isinstance(value, list) else [value]))
            hit = _norm(column).isin(wanted).to_numpy(bool)
            ok = ~hit if name.startswith("exclude_") else hit
            shown = ("not " if name.startswith("exclude_") else "") + ", ".join(map(str, value))
        before = int(alive.sum())
        lost = alive & ~ok
        for i in np.flatnonzero(lost):
            dropped[str(ids[i])] = name
        alive &= ok
        rows.append(
            {"rule": name, "value": shown, "column": col, "before": before, "dropped": int(lost.sum())}
            | {"after": int(alive.sum())}
        )
    kept = [str(i) for i in ids[alive]]
    if not kept:
        msg = f"the config's samples: rules keep none of the {len(ids)} samples of the {where}; loosen a rule"
        raise SpadeInputError(msg)
    return SelectionResult(kept, dropped, pd.DataFrame(rows), organ_table(table, kept), sel)


def organ_table(table: pd.DataFrame, kept: list[str]) -> pd.DataFrame:
    """Per organ: samples in ``table``, kept, and the kept samples' spots (``spots_under_tissue``) if known."""
    organ = (
        table["organ"].fillna("unknown").astype(str) if "organ" in table.columns else pd.Series("unknown", table.index)
    )
    is_kept = table.index.astype(str).isin(kept)
    df = pd.DataFrame({"organ": organ.to_numpy(), "kept": is_kept})
    out = df.groupby("organ", sort=True).agg(in_table=("kept", "size"), kept=("kept", "sum")).reset_index()
    if "spots_under_tissue" in table.columns:
        spots = np.nan_to_num(pd.to_numeric(table["spots_under_tissue"], errors="coerce").to_numpy(float))
        df["spots"] = np.where(is_kept, spots, 0.0)
        out["spots"] = df.groupby("organ", sort=True)["spots"].sum().to_numpy().astype(np.int64)
    out = out[out["kept"] > 0].sort_values(["kept", "organ"], ascending=[False, True], kind="stable")
    return out.reset_index(drop=True).astype({"kept": int})
