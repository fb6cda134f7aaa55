"""Clustering QC and few-shot curves."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._util import categorical_colors, finish, new_figure


def integer_axis(axis, values=None) -> None:
    """Whole-number ticks on an axis that counts (experts, k, spots, organs): never 0.25 of an expert.

    ``values``: the counts drawn (a tick at each when there are at most 16, else whole numbers chosen by
    matplotlib). On a log axis the ticks read as plain numbers (2, 4, 8), not powers.
    """
    from matplotlib.ticker import MaxNLocator, NullLocator, ScalarFormatter

    v = sorted({int(x) for x in values}) if values is not None else []
    if v and len(v) <= 16:
        axis.set_ticks(v)
    else:
        axis.set_major_locator(MaxNLocator(integer=True))
    if axis.get_scale() == "log":
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_locator(NullLocator())


def clustering_qc(choose_k: pd.DataFrame | None, qc: pd.DataFrame, save=None):
    """Elbow (standardised WCSS) and silhouette vs k; spots and organs (groups) per expert."""
    organs = bool("groups" in qc and qc["groups"].max() > 1)  # one organ per expert everywhere: nothing to draw
    elbow = choose_k is not None and len(choose_k) > 0
    n = 1 + elbow + organs
    fig, axes = new_figure(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    axes = axes[0]
    i = 0
    if elbow:
        ax = axes[0]
        ax.plot(choose_k["k"], choose_k["wcss_std"], "o-", label="WCSS (standardised)")
        ax2 = ax.twinx()
        ax2.plot(choose_k["k"], choose_k["silhouette"], "s--", color="C1", label="silhouette")
        ax.set_xscale("log", base=2)
        integer_axis(ax.xaxis, choose_k["k"])
        ax.set_xlabel("k (number of experts)")
        ax.set_ylabel("standardised WCSS")
        ax2.set_ylabel("silhouette")
        ax.set_title("choosing k")
        i = 1
    axes[i].bar(qc["expert"], qc["spots"], color="C0")
    integer_axis(axes[i].xaxis, qc["expert"])
    integer_axis(axes[i].yaxis)
    axes[i].set_xlabel("expert")
    axes[i].set_ylabel("training spots")
    axes[i].set_title("spots per expert")
    if organs:
        axes[i + 1].bar(qc["expert"], qc["groups"], color="C2")
        integer_axis(axes[i + 1].xaxis, qc["expert"])
        integer_axis(axes[i + 1].yaxis)
        axes[i + 1].set_xlabel("expert")
        axes[i + 1].set_ylabel("organs covered")
        axes[i + 1].set_title("organs per expert")
    fig.tight_layout()
    return finish(fig, save)


def fewshot_curves(summary: pd.DataFrame, metric: str = "balanced_accuracy", save=None, title: str = ""):
    """Metric vs k with 95% CI bands, one line per embedding source (one panel per probe/task).

    The metrics are rates in [0, 1], so the bands are clipped to that range. Takes a results table (the
    ``summary`` of ``spade-st evaluate`` or the bench), not an AnnData.
    """
    s = summary[summary["metric"] == metric].copy() if "metric" in summary else summary.copy()
    s = s[pd.to_numeric(s["k"], errors="coerce").notna()]
    s["k"] = s["k"].astype(float)
    by = "probe" if "probe" in s else "task"  # one panel per probe (long result schema), else per task
    panels = sorted(s[by].unique())
    fig, axes = new_figure(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 3.6), squeeze=False)
    sources = sorted(s["source"].unique())
    cols = dict(zip(sources, categorical_colors(len(sources)), strict=True))
    for ax, panel in zip(axes[0], panels, strict=False):
        for src in sources:
            d = s[(s[by] == panel) & (s["source"] == src)].sort_values("k")
            if d.empty:
                continue
            ax.plot(d["k"], d["mean"], "o-", color=cols[src], label=src)
            lo, hi = np.clip(d["ci_low"].to_numpy(float), 0, 1), np.clip(d["ci_high"].to_numpy(float), 0, 1)
            ok = np.isfinite(lo) & np.isfinite(hi)
            ax.fill_between(d["k"][ok], lo[ok], hi[ok], color=cols[src], alpha=0.2)
        ax.set_xscale("log", base=2)
        integer_axis(ax.xaxis, s["k"])
        ax.set_xlabel("shots per class (k)")
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(str(panel).replace("fewshot_", ""))
        ax.legend(fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return finish(fig, save)
