"""``spade-st run``: extract -> pretrain -> embed -> evaluate -> report on one data root, in one run folder.

The run folder has the layout ``spade-st report`` reads (:class:`~spade_st.io.runs.RunLayout`): ``features/
<encoder>/``, ``model/``, ``embeddings/``, ``results/<task>/``, ``report.html``. Each stage is the library call
its own command makes, and each skips what is already complete and matches (feature files by encoder, weights
and patch count; pretraining by its checkpoint key, split and panel; embeddings by model hash and routing), so a
run killed anywhere is resumed by the same command. ``--dry-run`` prints the plan from the sample table alone.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ._atomic import atomic_write_json
from ._validation import SpadeInputError
from ._warnlog import record_warnings
from .io.runs import RunLayout

STAGES = ("extract", "pretrain", "embed", "evaluate", "report")


@dataclass
class RunConfig:
    """Options of ``spade-st run``."""

    config: str | Path
    data: Path
    out: Path
    exclude: list[str] = field(default_factory=list)
    tasks: list[Path] = field(default_factory=list)  #: task manifests run by the evaluate stage
    from_stage: str | None = None  #: first stage to run (default: extract)
    until: str | None = None  #: last stage to run (default: report)
    dry_run: bool = False
    gpu_tflops: float | None = None  #: the GPU throughput a dry run assumes (default: plan.ASSUMED_GPU)
    device: str | None = None
    weights: Path | None = None  #: encoder weights (file or Hugging Face snapshot folder)
    allow_train_overlap: bool = False
    progress: bool = True
    #: options set on top of the config, by name (:meth:`PretrainConfig.set`; ``spade-st demo`` sets ``epochs``)
    overrides: dict = field(default_factory=dict)


def _stages(cfg: RunConfig) -> list[str]:
    for name in (cfg.from_stage, cfg.until):
        if name is not None and name not in STAGES:
            msg = f"unknown stage {name!r}; stages: {', '.join(STAGES)}"
            raise SpadeInputError(msg)
    first = STAGES.index(cfg.from_stage) if cfg.from_stage else 0
    last = STAGES.index(cfg.until) if cfg.until else len(STAGES) - 1
    if first > last:
        msg = f"--from {cfg.from_stage} comes after --until {cfg.until}; stages run in the order {', '.join(STAGES)}"
        raise SpadeInputError(msg)
    return list(STAGES[first : last + 1])


def run_pipeline(cfg: RunConfig) -> Path | None:
    """Run (or resume) the stages; returns the report path (None for a dry run or when ``until`` stops before it).

    Every input is checked before the first stage: the config, the data root's table and selection, the stage
    names and the task manifests.
    """
    from .train.config import load_config
    from .train.plan import make_plan

    stages = _stages(cfg)
    root = Path(cfg.data)
    if not root.is_dir():
        msg = f"data root {root} does not exist or is not a folder"
        raise FileNotFoundError(msg)
    pcfg = load_config(
        cfg.config, require=(), data=root, exclude=cfg.exclude or None, device=cfg.device, **cfg.overrides
    )
    run = RunLayout(cfg.out)
    encoder = pcfg.encoder or "efficientnet_lite0"
    pcfg.encoder, pcfg.features, pcfg.out = encoder, run.features(encoder), run.model
    if cfg.dry_run:
        from ._dist import rank0_print

        rank0_print(make_plan(pcfg, gpu_tflops=cfg.gpu_tflops).to_text(pcfg.val_fraction))
        return None
    from ._dist import barrier, init_distributed
    from .eval.tasks import load_task
    from .train.cohort import resolve_cohort

    tasks = [load_task(t) for t in cfg.tasks] if "evaluate" in stages else []  # refused before any work
    cohort = resolve_cohort(pcfg)
    info = init_distributed(cfg.device)  # under torchrun: extraction shards samples, pretraining is DDP
    if not info.is_main:
        cfg.progress = False
    log = {"stages": {}, "samples": cohort.ids, "config": str(cfg.config)}
    report = None
    for stage in stages:
        t0 = time.perf_counter()
        if cfg.progress:
            print(f"[run] {stage} ...", file=sys.stderr, flush=True)
        with record_warnings(run.root if info.is_main else None, stage):  # listed by the report
            if stage == "extract":
                _extract(cfg, pcfg, cohort.ids, run)
            elif stage == "pretrain":
                from .train.pretrain import pretrain

                pretrain(pcfg)
            elif stage == "embed":  # files shared over the ranks, as extraction's
                from .experts.embed import EmbedConfig, embed_features

                ecfg = EmbedConfig(run.model, pcfg.features, run.embeddings, ids=cohort.ids, device=cfg.device)
                embed_features(ecfg)
            elif not info.is_main:  # evaluation and the report: rank 0 alone (one writer per file)
                pass
            elif stage == "evaluate":
                _evaluate(cfg, tasks, run)
            else:
                from .pl.report import ReportConfig, write_report

                report = write_report(ReportConfig(run.root, data=root))  # the data root may live elsewhere
        barrier(info)
        log["stages"][stage] = {"seconds": round(time.perf_counter() - t0, 1)}
        if cfg.progress:
            print(f"[run] {stage} done ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    if info.is_main:
        atomic_write_json(run.root / "run.json", log)
    return report


def _extract(cfg: RunConfig, pcfg, ids: list[str], run: RunLayout) -> None:
    from .encoders.extract import ExtractConfig, extract

    out = run.features()
    extract(ExtractConfig(cfg.data, pcfg.encoder, out, weights=cfg.weights, device=cfg.device, ids=ids))


def _evaluate(cfg: RunConfig, tasks, run: RunLayout) -> None:
    from ._atomic import atomic_write_text
    from .eval.tasks import run_task

    run.results.mkdir(parents=True, exist_ok=True)
    for path, task in zip(cfg.tasks, tasks, strict=True):
        summary = run_task(path, run.results / task.name, allow_train_overlap=cfg.allow_train_overlap)
        atomic_write_text(run.results / f"{task.name}.csv", summary.to_csv(index=False))  # the report's tables
