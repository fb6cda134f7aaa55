"""Markdown tables without an extra dependency (every layer prints them: selection tables, results)."""

from __future__ import annotations

import pandas as pd


def to_markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub markdown table (no extra dependency)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for _, r in df.iterrows():
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in r.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
