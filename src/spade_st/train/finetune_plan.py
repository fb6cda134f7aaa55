"""What ``spade-st finetune`` will cost, from the sample table alone (``finetune --dry-run``).

The samples are the ones fine-tuning would use (the config's ``samples:`` rules and ``exclude``, as
:func:`~spade_st.train.cohort.resolve_cohort` decides for ``pretrain``); spots are the table's
``spots_under_tissue``. The encoder's FLOPs per 224 px patch are counted on the meta device (no weights, no
data): the frozen prefix and the trained blocks separately for ``blocks``, the whole network for ``lora``.
Training costs the forward pass plus a backward pass of twice the forward through trained layers (input and
weight gradients) and once through frozen layers that the gradient crosses (input gradients only): 3 x the
trained blocks' forward for ``blocks``, 2 x the whole network's for LoRA (its adapters' own FLOPs are
negligible). Times are FLOPs over the rates of :mod:`.plan` (forward passes at extraction's, epochs at
training's), so they are lower bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import _keys as K
from .finetune_config import FinetuneConfig
from .plan import (
    ASSUMED_GPU,
    MEASURED,
    PATCH_BYTES,
    cohort_spots,
    compute_table,
    head_flops_per_spot,
    panel_bound,
    selection_lines,
)


@dataclass
class EncoderCost:
    """FLOPs per 224 px patch of an encoder set up for fine-tuning, and what trains."""

    full: float  #: forward pass of the whole network
    prefix: float  #: forward pass of the frozen prefix (``blocks``; 0 for LoRA)
    trained_forward: float  #: forward pass of what the gradient runs through (the trained blocks, or all)
    backward_factor: float  #: backward FLOPs / ``trained_forward``
    parameters: int  #: trained parameters
    cut_numel: int  #: activations per patch at the cut (the cached prefix's output; 0 for LoRA)
    trained: str  #: what trains, in words


def encoder_cost(cfg: FinetuneConfig) -> EncoderCost:
    """The :class:`EncoderCost` of ``cfg``'s encoder and method, counted on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..encoders.lora import apply_lora, lora_parameters
    from ..encoders.partial import SplitNet
    from ..encoders.registry import build_backbone

    def flops(fn, x) -> tuple[float, torch.Tensor]:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            out = fn(x)
        return float(counter.get_total_flops()), out

    with torch.device("meta"):
        model = build_backbone(cfg.encoder, **cfg.arch)
        x = torch.empty(1, 3, K.PATCH_SIZE, K.PATCH_SIZE)
        full, _ = flops(model, x)
        if cfg.resolved_method() == "blocks":
            split = SplitNet(cfg.encoder, model, cfg.train_blocks)
            prefix, h = flops(split.prefix, x)
            suffix, _ = flops(split.suffix, h)
            n = sum(p.numel() for p in split.trained_parameters().values())
            what = f"the last {cfg.train_blocks} blocks ({', '.join(split.trained_names)})"
            return EncoderCost(full, prefix, suffix, 2.0, int(n), int(h.numel()), what)
        names = apply_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, cfg.seed)
        n = sum(p.numel() for p in lora_parameters(model).values())
        what = f"LoRA rank {cfg.lora_rank} on {len(names)} linears ({', '.join(cfg.lora_targets)})"
        return EncoderCost(full, 0.0, full, 1.0, int(n), 0, what)


@dataclass
class FinetunePlan:
    """The numbers of a fine-tuning dry run (also what :meth:`to_text` prints)."""

    cfg: FinetuneConfig
    organs: object  #: DataFrame: organ, samples, spots
    n_samples: int
    n_spots: int
    cost: EncoderCost
    feature_dim: int
    gpu_flops: float
    missing_spots: int = 0
    selection: str = ""

    @property
    def n_genes_bound(self) -> int:
        """At most how many genes the gene head reads (:func:`~spade_st.train.plan.panel_bound`)."""
        return panel_bound(self.n_samples, self.cfg.val_fraction, self.cfg.n_top_genes)

    @property
    def cached(self) -> bool:
        return self.cfg.resolved_method() == "blocks" and self.cfg.cache_prefix

    def stage_flops(self) -> dict[str, float]:
        """FLOPs of the prefix cache (once), one epoch (at most ``epochs``) and re-extracting every spot."""
        c, cfg = self.cost, self.cfg
        train, val = self.n_spots * (1 - cfg.val_fraction), self.n_spots * cfg.val_fraction
        heads = head_flops_per_spot(self.feature_dim, self.n_genes_bound, cfg.out_dim, cfg.batch_size)
        step = c.trained_forward * (1 + c.backward_factor) + (0.0 if self.cached else c.prefix)
        val_pass = c.trained_forward if self.cached else c.full
        out = {"prefix cache (once)": self.n_spots * cfg.views * c.prefix} if self.cached else {}
        epoch = train * (step + heads) + val * val_pass
        out |= {"one epoch": epoch, f"{cfg.epochs} epochs (the most)": epoch * cfg.epochs}
        return out | {"extract with the fine-tuned encoder": self.n_spots * c.full}

    def to_text(self) -> str:
        from .._markdown import to_markdown

        cfg, c, gb = self.cfg, self.cost, 1e9
        lines = [self.selection] if self.selection else []
        lines += [
            f"finetune plan: {self.n_samples} samples, {self.n_spots:,} spots (spots_under_tissue), "
            f"{len(self.organs)} organ(s); about {cfg.val_fraction:.0%} of them validate (whole patients)",
            to_markdown(self.organs),
            f"encoder {cfg.encoder}: {c.full / 1e9:.1f} GFLOP per patch (counted); trains {c.trained}: "
            f"{c.parameters:,} parameters",
            f"patches: {self.n_spots:,} x 224 px = {self.n_spots * PATCH_BYTES / gb:.1f} GB (uint8, patches/<id>.h5)",
            f"heads: {self.feature_dim}-d features and at most {self.n_genes_bound:,} panel genes ({cfg.n_top_genes} "
            f"HVGs x training samples, the union is smaller) -> {cfg.out_dim}-d, {cfg.loss} loss",
        ]
        if self.cached:
            size = self.n_spots * cfg.views * c.cut_numel * 4
            lines.append(
                f"prefix cache: {cfg.views} view(s) x {c.cut_numel:,} float32 per patch = {size / gb:,.1f} GB on disk "
                f"(cache_dir; fewer views or more train_blocks make it smaller, cache_prefix: false drops it)"
            )
        if self.missing_spots:
            lines.append(f"note: {self.missing_spots} sample(s) have no spots_under_tissue; counted as 0 spots")
        flops = self.stage_flops()
        cpu = {step: MEASURED["train_cpu" if "epoch" in step else "extract_cpu"] for step in flops}
        lines += [
            f"compute ({cfg.views} view(s), batch {cfg.batch_size}, backward = {c.backward_factor:.0f} x the forward "
            "of what the gradient crosses):",
            compute_table("step", flops, cpu, self.gpu_flops),
            "times are FLOPs / rate, so lower bounds: reading patches and per-step overheads come on top. CPU rates:"
            " measured on a 2-core x86-64 VM (forward passes at extraction's 41.9 GFLOP/s effective, epochs at"
            " training's 140 GFLOP/s); the GPU rate is an assumption (--gpu-tflops), not a measurement",
        ]
        return "\n".join(lines)


def make_finetune_plan(cfg: FinetuneConfig, table=None, gpu_tflops: float | None = None) -> FinetunePlan:
    """The plan of fine-tuning ``cfg`` on its data root's table (its sample rules applied, no file read)."""
    from ..encoders.registry import get_spec
    from ..io.layout import read_metadata
    from .cohort import resolve_cohort
    from .finetune import cohort_config

    cfg = cfg.validate(need_out=False)
    table = read_metadata(cfg.data) if table is None else table
    cohort = resolve_cohort(cohort_config(cfg), table=table, need_files=False)
    ids = cohort.train_candidates
    organs, n_spots, missing = cohort_spots(table, ids)
    return FinetunePlan(
        cfg=cfg,
        organs=organs,
        n_samples=len(ids),
        n_spots=n_spots,
        cost=encoder_cost(cfg),
        feature_dim=get_spec(cfg.encoder).embed_dim,
        gpu_flops=(gpu_tflops * 1e12) if gpu_tflops else ASSUMED_GPU,
        missing_spots=missing,
        selection=selection_lines(cohort),
    )
