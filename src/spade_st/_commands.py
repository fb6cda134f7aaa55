"""Handlers of the ``spade-st`` subcommands: flags -> typed configs -> library calls."""

from __future__ import annotations


def _cmd_convert(args) -> int:
    from . import io

    common = {"overwrite": args.overwrite}
    if args.format == "her2st":
        cfg = io.Her2stConfig(
            args.counts,
            args.spots,
            args.image,
            args.sample_id,
            args.pixel_size_um,
            args.out,
            coord_scale=args.coord_scale,
            organ=args.organ,
            patient=args.patient,
            labels=args.labels,
            **common,
        )
        root = io.convert_her2st(cfg)
    elif args.format == "visium":
        cfg = io.VisiumConfig(
            args.spaceranger,
            args.sample_id,
            args.out,
            image=args.image,
            pixel_size_um=args.pixel_size_um,
            organ=args.organ,
            patient=args.patient,
            species=args.species,
            duplicate_genes=args.duplicate_genes,
            **common,
        )
        root = io.convert_visium(cfg)
    else:
        cfg = io.AnnDataConfig(
            args.adata,
            args.image,
            args.sample_id,
            args.out,
            pixel_size_um=args.pixel_size_um,
            layer=args.layer,
            spatial_key=args.spatial_key,
            organ=args.organ,
            patient=args.patient,
            st_technology=args.st_technology,
            duplicate_genes=args.duplicate_genes,
            **common,
        )
        root = io.convert_anndata(cfg)
    n = len(io.PatchFile(io.Layout(root).patches(args.sample_id)))
    print(f"wrote sample {args.sample_id} ({n} patches) to {root}")
    return 0


def _cmd_demo_data(args) -> int:
    from .datasets import SyntheticConfig, synthetic

    root = synthetic(
        SyntheticConfig(
            out=args.out,
            samples=args.samples,
            spots=args.spots,
            seed=args.seed,
            genes=args.genes,
            overwrite=args.overwrite,
        )
    )
    print(f"wrote {args.samples} synthetic samples to {root}")
    return 0


def _cmd_check(args) -> int:
    from .io import read_hest

    samples = read_hest(args.data, ids=args.ids, require_wsi=args.require_wsi)
    for s in samples:
        px = s.pixel_size_um
        print(f"{s.id}\t{s.organ}\t{s.patient}\t{len(s.patches)} patches\t{px if px else 'NO PIXEL SIZE'} µm/px")
    print(f"{len(samples)} sample(s) OK in {args.data}")
    return 0


def _cmd_demo(args) -> int:
    from .demo import DemoConfig, run_demo

    report = run_demo(
        DemoConfig(out=args.out, samples=args.samples, spots=args.spots, seed=args.seed, epochs=args.epochs)
    )
    print(f"report: {report}")
    return 0


def _cmd_extract(args) -> int:
    from .encoders.extract import ExtractConfig, extract

    paths = extract(
        ExtractConfig(
            data=args.data,
            encoder=args.encoder,
            out=args.out,
            weights=args.weights,
            batch_size=args.batch_size,
            device=args.device,
            num_workers=args.num_workers,
            ids=args.ids,
            overwrite=args.overwrite,
        )
    )
    print(f"{len(paths)} feature file(s) in {args.out / args.encoder}")
    return 0


def _cmd_extract_wsi(args) -> int:
    from .encoders.extract_wsi import ExtractWsiConfig, extract_wsi

    paths = extract_wsi(
        ExtractWsiConfig(
            wsi=args.wsi,
            encoder=args.encoder,
            out=args.out,
            weights=args.weights,
            pixel_size_um=args.pixel_size_um,
            batch_size=args.batch_size,
            device=args.device,
            min_tissue=args.min_tissue,
            overwrite=args.overwrite,
        )
    )
    print(f"{len(paths)} slide feature file(s) in {args.out / args.encoder}")
    return 0


def _cmd_encoders(args) -> int:
    from .encoders import get_spec, list_encoders

    for name in list_encoders():
        spec = get_spec(name)
        print(f"{name:20s} {spec.embed_dim:5d}-d  {spec.description}")
    return 0


def _cmd_pretrain(args) -> int:
    from .train.config import load_config
    from .train.pretrain import pretrain

    cfg = load_config(
        args.config,
        data=args.data,
        features=args.features,
        out=args.out,
        exclude=args.exclude,
        k1=args.k1,
        experts=args.experts,
        epochs=args.epochs,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        lr=args.lr,
        loss=args.loss,
        gene_mode=args.gene_mode,
        early_stop=args.early_stop,
    )
    out = pretrain(cfg)
    print(f"model: {out}")
    return 0


def _cmd_embed(args) -> int:
    from .experts.embed import EmbedConfig, embed_features

    paths = embed_features(
        EmbedConfig(
            model=args.model,
            features=args.features,
            out=args.out,
            ids=args.ids,
            topk=args.topk,
            tau_r=args.tau_r,
            device=args.device,
            data=args.data,
            adata=args.adata,
            overwrite=args.overwrite,
        )
    )
    print(f"{len(paths)} embedding file(s) in {args.out}")
    return 0


def _cmd_bench(args) -> int:
    from .eval.her2st import Her2stBenchConfig, headline, run_her2st_bench
    from .eval.stats import to_markdown

    summary = run_her2st_bench(
        Her2stBenchConfig(
            data=args.data,
            features=args.features,
            out=args.out,
            model=args.model,
            config=args.config,
            epochs=args.epochs,
            seeds=args.seeds,
            single_expert=not args.no_single_expert,
            progress=True,
        )
    )
    print(to_markdown(headline(summary)))
    print(f"results: {args.out / 'results.csv'}, {args.out / 'results.md'}")
    return 0


def _cmd_evaluate(args) -> int:
    from .eval.stats import to_markdown
    from .eval.tasks import run_task

    summary = run_task(args.task, args.out)
    print(to_markdown(summary))
    print(f"results: {args.out / 'results.csv'}")
    return 0


def _cmd_report(args) -> int:
    from .pl.report import write_report

    print(f"report: {write_report(args.run)}")
    return 0


def _cmd_doctor(args) -> int:
    from .doctor import format_report, run_doctor

    rows = run_doctor(args.data, args.weights_dir)
    print(format_report(rows))
    return 0 if all(ok for name, ok, _, _ in rows if not name.startswith("weights ")) else 1
