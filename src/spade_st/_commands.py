"""Handlers of the ``spade-st`` subcommands: flags -> typed configs -> library calls."""

from __future__ import annotations

import argparse
from dataclasses import fields


def echo(*args, **kwargs) -> None:
    """``print`` a command's summary on rank 0 only: once under ``torchrun``, not once per rank."""
    from ._dist import rank0_print

    rank0_print(*args, **kwargs)


def from_args(cls, args, **extra):
    """Build the dataclass ``cls`` from the parsed flags whose names are its fields (``extra`` overrides)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names} | extra)


def _cmd_convert(args) -> int:
    from . import io

    if args.format == "her2st":
        cfg = from_args(io.Her2stConfig, args)
        root = io.convert_her2st(cfg)
    elif args.format == "visium":
        cfg = from_args(io.VisiumConfig, args)
        root = io.convert_visium(cfg)
    elif args.format == "spatialdata":
        cfg = from_args(io.SpatialDataConfig, args)
        root = io.convert_spatialdata(cfg)
    else:
        cfg = from_args(io.AnnDataConfig, args)
        root = io.convert_anndata(cfg)
    n = len(io.PatchFile(io.Layout(root).patches(args.sample_id)))
    echo(f"wrote sample {args.sample_id} ({n} patches) to {root}")
    return 0


def _cmd_export(args) -> int:
    from .io import to_spatialdata

    sdata = to_spatialdata(
        data=args.data,
        sample_id=args.sample_id,
        prediction=args.prediction,
        wsi=args.wsi,
        features=args.features,
        pixel_size_um=args.pixel_size_um,
        out=args.out,
        overwrite=args.overwrite,
    )
    said = ", ".join(f"{k} ({v.n_obs} rows)" for k, v in sdata.tables.items())
    echo(f"wrote {args.out}: images {list(sdata.images)}, shapes {list(sdata.shapes)}, tables {said}")
    return 0


def _cmd_demo_data(args) -> int:
    from .datasets import SyntheticConfig, synthetic

    root = synthetic(from_args(SyntheticConfig, args))
    echo(f"wrote {args.samples} synthetic samples to {root}")
    return 0


def _cmd_check(args) -> int:
    from . import _keys as K
    from .io import read_hest
    from .io.writer import MAX_UPSAMPLING

    samples = read_hest(args.data, ids=args.ids, require_wsi=args.require_wsi)
    bad = 0
    for s in samples:
        px = s.pixel_size_um
        up = px / K.PATCH_PIXEL_SIZE_UM if px else None
        said = (
            "PROBLEM: no pixel size"
            if not px
            else f"PROBLEM: patches upsampled {up:.0f}x (over {MAX_UPSAMPLING:g}x)"
            if up > MAX_UPSAMPLING
            else f"warning: patches upsampled {up:.1f}x"
            if up > 2
            else "OK"
        )
        bad += said.startswith("PROBLEM")
        echo(f"{s.id}\t{s.organ}\t{s.patient}\t{len(s.patches)} patches\t{px if px else '-'} µm/px\t{said}")
    echo(f"{len(samples) - bad} sample(s) OK, {bad} with problems in {args.data}")
    return 1 if bad else 0


def _cmd_demo(args) -> int:
    from .demo import DemoConfig, run_demo

    _headless()
    report = run_demo(from_args(DemoConfig, args))
    echo(f"report: {report}")
    return 0


def _cmd_extract(args) -> int:
    from .encoders.extract import ExtractConfig, extract

    paths = extract(from_args(ExtractConfig, args))
    echo(f"{len(paths)} feature file(s) in {paths[0].parent if paths else args.out}")
    return 0


def _cmd_extract_wsi(args) -> int:
    from .encoders.extract_wsi import ExtractWsiConfig, extract_wsi

    paths = extract_wsi(from_args(ExtractWsiConfig, args))
    echo(f"{len(paths)} slide feature file(s) in {paths[0].parent if paths else args.out}")
    return 0


def _cmd_encoders(args) -> int:
    from .encoders import get_spec, list_encoders

    for name in list_encoders():
        spec = get_spec(name)
        echo(f"{name:20s} {spec.embed_dim:5d}-d  {spec.description}")
    return 0


def _cmd_pretrain(args) -> int:
    from .train.config import PretrainConfig, load_config
    from .train.pretrain import pretrain

    names = set(PretrainConfig.option_names())

    cfg = load_config(args.config, **{k: v for k, v in vars(args).items() if k in names})
    out = pretrain(cfg)
    echo(f"model: {out}")
    return 0


def _cmd_embed(args) -> int:
    from .experts.embed import EmbedConfig, embed_features

    paths = embed_features(from_args(EmbedConfig, args))
    echo(f"{len(paths)} embedding file(s) in {args.out}")
    return 0


def _cmd_bench(args) -> int:
    from .eval.her2st_bench import Her2stBenchConfig, headline, run_her2st_bench
    from .eval.stats import to_markdown

    if args.bench == "hest":
        from .eval.hest_bench import HestBenchConfig, run_hest_bench

        echo(to_markdown(run_hest_bench(from_args(HestBenchConfig, args, progress=True))))
        echo(f"results: {args.out / 'dataset_results.json'}, {args.out / 'results.md'}")
        return 0

    cfg = from_args(
        Her2stBenchConfig,
        args,
        **{k: tuple(getattr(args, k)) for k in ("targets", "probes", "protocols", "variants", "ks")},
        progress=True,
    )
    summary = run_her2st_bench(cfg)
    echo(to_markdown(headline(summary)))
    echo(f"results: {args.out / 'results.csv'}, {args.out / 'results.md'}")
    return 0


def _cmd_evaluate(args) -> int:
    from .eval.stats import to_markdown
    from .eval.tasks import run_task

    summary = run_task(args.task, args.out, allow_train_overlap=args.allow_train_overlap)
    echo(to_markdown(summary))
    echo(f"results: {args.out / 'results.csv'}")
    return 0


def _headless() -> None:
    """Draw into files only: the CLI never needs a display (the library leaves the backend to the user)."""
    import matplotlib

    matplotlib.use("Agg")


def _cmd_report(args) -> int:
    from .pl.report import ReportConfig, write_report

    _headless()
    echo(f"report: {write_report(from_args(ReportConfig, args))}")
    return 0


def _cmd_run(args) -> int:
    from .run import RunConfig, run_pipeline

    _headless()
    cfg = from_args(RunConfig, args, exclude=args.exclude or [])
    report = run_pipeline(cfg)
    if report is not None:
        echo(f"report: {report}")
    return 0


def _cmd_predict(args) -> int:
    from .tl._predict import PredictConfig, predict_slides

    _headless()
    paths = predict_slides(from_args(PredictConfig, args))
    echo(f"{len(paths)} file(s) in {args.out}")
    return 0


def _cmd_fit_predictor(args) -> int:
    from ._validation import SpadeInputError
    from .encoders.weights import sha256_file
    from .experts.model import SpadeModel
    from .experts.predictor import ExpressionPredictor
    from .genes.symbols import unique_names
    from .io.runs import ModelLayout
    from .train.predictor import fit_predictor_from_root

    model = SpadeModel.from_pretrained(args.model, load_head=False)  # a stale head (another model) is refitted
    old = None
    if ModelLayout(args.model).head_config.is_file():
        try:
            old = ExpressionPredictor.load(args.model)
        except SpadeInputError:  # half-rewritten: replaced, not extended
            old = None
    genes, said = args.genes, ""
    if args.genes and old is not None and not args.replace:
        genes = unique_names([*old.genes, *args.genes])  # the head's genes plus the new ones, refitted together
        added = len(genes) - len(old.genes)
        said = (
            f"{added} gene(s) added to the head's {len(old.genes)}" if added else "no new gene: the same panel refitted"
        )
    elif args.genes and old is not None:
        said = f"replaces the head's {len(old.genes)} genes (--replace)"
    head = fit_predictor_from_root(
        model,
        args.data,
        args.features,
        args.ids,
        genes,
        model_sha256=sha256_file(ModelLayout(args.model).weights),
    )
    head.save(args.model)
    echo(f"expression head ({len(head.genes)} genes{'; ' + said if said else ''}) written to {args.model}")
    return 0


def _cmd_doctor(args) -> int:
    from .doctor import failed_needed, format_report, run_doctor

    rows = run_doctor(args.data, args.weights_dir, getattr(args, "config", None))
    echo(format_report(rows))
    return 1 if failed_needed(rows) else 0  # optional items missing: still 0


def _cmd_finetune(args) -> int:
    from .train.finetune import finetune
    from .train.finetune_config import FinetuneConfig, load_finetune_config

    names = {f for f in FinetuneConfig.__dataclass_fields__} - {"progress"}
    cfg = load_finetune_config(args.config, **{k: v for k, v in vars(args).items() if k in names})
    if args.dry_run:
        from .train.finetune_plan import make_finetune_plan

        echo(make_finetune_plan(cfg, gpu_tflops=args.gpu_tflops).to_text())
        return 0
    out = finetune(cfg)
    echo(f"encoder folder: {out} (use it as --encoder finetuned:{out})")
    return 0


def _cmd_view(args) -> int:
    from .pl.viewer import ViewConfig, write_viewers

    pages = write_viewers(from_args(ViewConfig, args))
    echo(f"{len(pages)} viewer(s): open {pages[0]}" + (f" (and {len(pages) - 1} more)" if len(pages) > 1 else ""))
    return 0


def _cmd_predict_view(args) -> int:
    """``predict``, then ``view`` of its slides when ``--view`` is given (refused before any work without --wsi)."""
    if args.view is not None and not args.wsi:
        msg = "--view draws the slides: pass --wsi SLIDE with it (the slides of the feature files)"
        raise ValueError(msg)
    code = _cmd_predict(args)
    if args.view is None or code:
        return code
    view = argparse.Namespace(**{**vars(args), "predictions": args.out, "out": args.view, "sample": None})
    return _cmd_view(view)
