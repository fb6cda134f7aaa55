"""What a run will cost, from the sample table alone (``spade-st run --dry-run``): no image, matrix or patch read.

Spots are the table's ``spots_under_tissue``; an encoder's FLOPs per 224 px patch are counted by
``torch.utils.flop_counter`` on the meta device (the architecture without weights or data); the heads' training
FLOPs follow from their shapes (forward + backward = 3 x the forward's 2 FLOPs per multiply-add). Times are
FLOPs over a throughput: a measured CPU figure (``MEASURED``, with its hardware) and an assumed GPU one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _keys as K
from .config import PretrainConfig

#: effective throughputs measured on a 2-core x86-64 VM (README, benchmarks/bench_extract.py and bench_train.py):
#: efficientnet_lite0 extraction 54.6 patches/s x 0.768 GFLOP; training at 43 % of a 326 GFLOP/s matmul bound
MEASURED = {"extract_cpu": 54.6 * 0.768e9, "train_cpu": 0.43 * 326e9}
#: the GPU throughput assumed unless given (FLOP/s): an H100-class bf16 dense peak of ~990 TFLOP/s at 40 %
ASSUMED_GPU = 400e12
PATCH_BYTES = K.PATCH_SIZE * K.PATCH_SIZE * 3  #: one uint8 RGB patch


def encoder_flops(name: str) -> float:
    """FLOPs of one forward pass of encoder ``name`` on a 224 px patch (counted on the meta device)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..encoders.registry import build_backbone

    with torch.device("meta"):
        model = build_backbone(name)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.empty(1, 3, K.PATCH_SIZE, K.PATCH_SIZE))
    return float(counter.get_total_flops())


def panel_bound(n_samples: int, val_fraction: float, n_top: int) -> int:
    """At most how many genes the panel has: ``n_top`` HVGs x the training samples of a ``val_fraction`` split
    of ``n_samples`` (the union by name is smaller)."""
    return n_top * max(int(np.ceil(n_samples * (1 - val_fraction))), 1)


def selection_lines(cohort) -> str:
    """The rule table of a cohort's sample selection for a plan's head ('' when no rule is set)."""
    return cohort.selection.summary().split("\n| organ |")[0] if cohort.selection.selection.active else ""


def head_flops_per_spot(feature_dim: int, n_genes: int, out_dim: int, batch: int) -> float:
    """Training FLOPs of one spot in one epoch: both residual heads (a linear in, a linear out of out_dim) and
    its row of the B x B similarity, forward and backward."""
    macs = feature_dim * out_dim + out_dim * out_dim + n_genes * out_dim + out_dim * out_dim + batch * out_dim
    return 3 * 2 * float(macs)


@dataclass
class Plan:
    """The numbers of a dry run (also what :meth:`to_text` prints)."""

    organs: object  #: DataFrame: organ, samples, spots
    n_samples: int
    n_spots: int
    encoder: str
    feature_dim: int
    encoder_gflops: float
    n_genes_bound: int
    k1: int
    n_experts: int
    epochs: int
    batch_size: int
    out_dim: int
    gpu_flops: float
    missing_spots: int = 0  #: kept samples whose table row has no spots_under_tissue
    selection: str = ""  #: the selection's rule table (as the pretrain log prints it)

    @property
    def n_centroids(self) -> int:
        return self.k1 * len(self.organs)

    def stage_flops(self, val_fraction: float) -> dict[str, float]:
        train_spots = self.n_spots * (1 - val_fraction)
        heads = head_flops_per_spot(self.feature_dim, self.n_genes_bound, self.out_dim, self.batch_size)
        return {
            "extract": self.n_spots * self.encoder_gflops * 1e9,
            "pretrain": heads * train_spots * self.epochs,
            "embed": self.n_spots
            * 2.0
            * (self.n_centroids * self.feature_dim + self.n_experts * (self.feature_dim + self.out_dim) * self.out_dim),
        }

    def to_text(self, val_fraction: float) -> str:
        from .._markdown import to_markdown

        gb = 1e9
        feat_b = self.n_spots * self.feature_dim * 4
        store_b = self.n_spots * (self.feature_dim + self.n_genes_bound) * 4
        lines = [self.selection] if self.selection else []
        lines += [
            f"plan: {self.n_samples} samples, {self.n_spots:,} spots (spots_under_tissue), {len(self.organs)} organ(s)",
            to_markdown(self.organs),
            f"patches: {self.n_spots:,} x 224 px = {self.n_spots * PATCH_BYTES / gb:.1f} GB (uint8, patches/<id>.h5)",
            f"features ({self.encoder}, {self.feature_dim}-d float32): {feat_b / gb:.2f} GB",
            f"pretraining store: <= {store_b / gb:.2f} GB (features + at most {self.n_genes_bound:,} panel genes:"
            " 50 HVGs x training samples, the union is smaller)",
            f"experts: {self.k1} stage-1 clusters x {len(self.organs)} organ(s) = {self.n_centroids} centroids -> "
            f"{self.n_experts} experts, ~{self.n_spots * (1 - val_fraction) / self.n_experts:,.0f} training spots "
            "per expert on average (the clustering decides)",
        ]
        if self.missing_spots:
            lines.append(f"note: {self.missing_spots} sample(s) have no spots_under_tissue; counted as 0 spots")
        cpu = {"extract": MEASURED["extract_cpu"], "pretrain": MEASURED["train_cpu"], "embed": MEASURED["train_cpu"]}
        lines += [
            f"compute ({self.encoder}: {self.encoder_gflops:.1f} GFLOP per patch, counted; {self.epochs} epochs, "
            f"batch {self.batch_size}):",
            compute_table("stage", self.stage_flops(val_fraction), cpu, self.gpu_flops),
            "times are FLOPs / rate, so lower bounds: reading patches and per-step overheads come on top. CPU rates:"
            " measured on a 2-core x86-64 VM (extraction 41.9 GFLOP/s effective, training 140 GFLOP/s); the GPU"
            " rate is an assumption (--gpu-tflops), not a measurement",
        ]
        return "\n".join(lines)


def compute_table(first: str, flops: dict[str, float], cpu_rates: dict[str, float], gpu_flops: float) -> str:
    """A plan's compute table (markdown): per row of ``flops`` (name -> FLOPs, the column ``first``), TFLOP and
    the time at its CPU rate (``cpu_rates``, FLOP/s by name) and at ``gpu_flops``."""
    import pandas as pd

    from .._markdown import to_markdown

    rows = [
        {
            first: name,
            "TFLOP": f"{f / 1e12:,.1f}",
            "CPU at the measured rate": _duration(f / cpu_rates[name]),
            f"GPU at {gpu_flops / 1e12:.0f} TFLOP/s (assumed)": _duration(f / gpu_flops),
        }
        for name, f in flops.items()
    ]
    return to_markdown(pd.DataFrame(rows))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def cohort_spots(table, ids: list[str]):
    """(organ table with samples and spots, total spots, samples without ``spots_under_tissue``) of ``ids``."""
    import pandas as pd

    from ..io.selection import organ_table

    spots = pd.to_numeric(table.loc[ids].get("spots_under_tissue", pd.Series(np.nan, index=ids)), errors="coerce")
    organs = organ_table(table, ids).rename(columns={"kept": "samples"}).assign(spots=lambda d: d.get("spots", 0))
    return organs[["organ", "samples", "spots"]], int(spots.fillna(0).sum()), int(spots.isna().sum())


def make_plan(cfg: PretrainConfig, table=None, gpu_tflops: float | None = None) -> Plan:
    """The plan of pretraining ``cfg`` on its data root's table (selection rules applied, no file read)."""

    from ..encoders.registry import get_spec
    from ..io.layout import read_metadata
    from .cohort import resolve_cohort

    table = read_metadata(cfg.data) if table is None else table
    cohort = resolve_cohort(cfg, table=table, need_files=False)
    ids = cohort.train_candidates
    organs, n_spots, missing = cohort_spots(table, ids)
    encoder = cfg.encoder or "efficientnet_lite0"
    return Plan(
        organs=organs,
        n_samples=len(ids),
        n_spots=n_spots,
        encoder=encoder,
        feature_dim=get_spec(encoder).embed_dim,
        encoder_gflops=encoder_flops(encoder) / 1e9,
        n_genes_bound=panel_bound(len(ids), cfg.val_fraction, cfg.n_top_genes),
        k1=cfg.clustering.k1,
        n_experts=cfg.clustering.n_experts,
        epochs=cfg.optim.epochs,
        batch_size=cfg.optim.batch_size,
        out_dim=cfg.model.out_dim,
        gpu_flops=(gpu_tflops * 1e12) if gpu_tflops else ASSUMED_GPU,
        missing_spots=missing,
        selection=selection_lines(cohort),
    )
