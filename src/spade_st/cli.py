"""The ``spade-st`` command line. Thin: it parses flags into config objects and calls the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from ._commands import (
    _cmd_bench,
    _cmd_check,
    _cmd_convert,
    _cmd_demo,
    _cmd_demo_data,
    _cmd_doctor,
    _cmd_embed,
    _cmd_encoders,
    _cmd_evaluate,
    _cmd_extract,
    _cmd_extract_wsi,
    _cmd_fit_predictor,
    _cmd_predict,
    _cmd_pretrain,
    _cmd_report,
)


def _add_convert(sub) -> None:
    conv = sub.add_parser("convert", help="convert a dataset into the HEST-1k layout")
    csub = conv.add_subparsers(dest="format", required=True)

    h = csub.add_parser("her2st", help="legacy ST tables (her2st): counts .tsv.gz + spot selection + H&E image")
    h.add_argument("--counts", type=Path, required=True)
    h.add_argument("--spots", type=Path, required=True)
    h.add_argument("--image", type=Path, required=True)
    h.add_argument("--sample-id", required=True)
    h.add_argument("--pixel-size-um", type=float, required=True, help="µm per pixel of --image")
    h.add_argument("--out", type=Path, required=True)
    h.add_argument("--coord-scale", type=float, default=1.0, help="multiply spot pixel coords (for a downscaled image)")
    h.add_argument("--organ", default="Breast")
    h.add_argument("--patient")
    h.add_argument("--labels", type=Path, help="pathologist labels S_labeled_coordinates.tsv -> obs['label']")
    h.add_argument("--overwrite", action="store_true")

    v = csub.add_parser("visium", help="a Space Ranger output folder")
    v.add_argument("--spaceranger", type=Path, required=True)
    v.add_argument("--image", type=Path, help="full-resolution H&E (default: spatial/tissue_hires_image.png)")
    v.add_argument("--sample-id", required=True)
    v.add_argument("--out", type=Path, required=True)
    v.add_argument("--pixel-size-um", type=float)
    v.add_argument("--organ", default="unknown")
    v.add_argument("--patient")
    v.add_argument("--species", default="Homo sapiens")
    v.add_argument("--duplicate-genes", choices=["error", "sum"], default="sum")
    v.add_argument("--overwrite", action="store_true")

    a = csub.add_parser("anndata", help="an .h5ad with raw counts and obsm['spatial'] + its H&E image")
    a.add_argument("--adata", type=Path, required=True)
    a.add_argument("--image", type=Path, required=True)
    a.add_argument("--sample-id", required=True)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--pixel-size-um", type=float)
    a.add_argument("--layer", help="take raw counts from this layer ('raw' for adata.raw)")
    a.add_argument("--spatial-key", default="spatial")
    a.add_argument("--organ", default="unknown")
    a.add_argument("--patient")
    a.add_argument("--st-technology", default="unknown")
    a.add_argument("--duplicate-genes", choices=["error", "sum"], default="error")
    a.add_argument("--overwrite", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spade-st", description="SPADE: ST-shaped pathology embeddings")
    p.add_argument("--version", action="version", version=f"spade-st {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    _add_convert(sub)
    d = sub.add_parser("demo-data", help="write the built-in synthetic dataset (HEST layout)")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--samples", type=int, default=6)
    d.add_argument("--spots", type=int, default=300)
    d.add_argument("--genes", type=int, default=300)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--overwrite", action="store_true")
    dm = sub.add_parser("demo", help="run the whole pipeline on synthetic data and write a report")
    dm.add_argument("--out", type=Path, default=Path("runs/demo"))
    dm.add_argument("--samples", type=int, default=8)
    dm.add_argument("--spots", type=int, default=200)
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("--epochs", type=int, help="override configs/demo.yaml")
    e = sub.add_parser("extract", help="features of every spot patch of a HEST root")
    e.add_argument("--data", type=Path, required=True)
    e.add_argument("--encoder", default="efficientnet_lite0", help="see `spade-st encoders`")
    e.add_argument("--weights", type=Path, help="weights file or Hugging Face snapshot folder")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--batch-size", type=int, help="default: 256 on GPU, 16 on CPU")
    e.add_argument("--device")
    e.add_argument("--num-workers", type=int, default=0)
    e.add_argument("--ids", nargs="+")
    e.add_argument("--overwrite", action="store_true")
    ew = sub.add_parser("extract-wsi", help="tissue tiles of whole slides and their features")
    ew.add_argument("--wsi", type=Path, action="append", required=True, help="a slide (repeat for more)")
    ew.add_argument("--encoder", default="efficientnet_lite0")
    ew.add_argument("--weights", type=Path)
    ew.add_argument("--out", type=Path, required=True)
    ew.add_argument("--pixel-size-um", type=float, help="µm/px of level 0 when the slide has none")
    ew.add_argument("--batch-size", type=int, default=64)
    ew.add_argument("--device")
    ew.add_argument("--min-tissue", type=float, default=0.25)
    ew.add_argument("--overwrite", action="store_true")
    sub.add_parser("encoders", help="list the registered encoders")
    pt = sub.add_parser("pretrain", help="train the SPADE experts (resumable)")
    pt.add_argument("--config", type=Path, help="YAML config (configs/*.yaml); flags override it")
    pt.add_argument("--data", type=Path)
    pt.add_argument("--features", type=Path, help="FEATS/<encoder> from `spade-st extract`")
    pt.add_argument("--out", type=Path)
    pt.add_argument("--exclude", nargs="+", help="sample ids kept out of every step")
    pt.add_argument("--k1", type=int)
    pt.add_argument("--experts", type=int)
    pt.add_argument("--epochs", type=int)
    pt.add_argument("--batch-size", type=int)
    pt.add_argument("--device")
    pt.add_argument("--seed", type=int)
    pt.add_argument("--lr", type=float)
    pt.add_argument("--loss", choices=["bleep", "infonce"])
    pt.add_argument("--gene-mode", choices=["log1p", "raw"])
    pt.add_argument("--early-stop", type=int, help="patience in epochs per expert")
    pt.add_argument("--min-expert-spots", type=int, help="fewest training spots per expert (0: no rule)")
    pt.add_argument(
        "--output",
        choices=["spade", "residual", "concat"],
        help="embedding: experts only (paper), a fixed PCA projection + experts, or both concatenated",
    )
    pt.add_argument("--shared-gene-head", action="store_true", default=None, help="one gene head for all experts")
    pt.add_argument("--gene-smoothing", type=float, help="average the gene input over spots within N pitches")
    pt.add_argument("--gene-library-size", action="store_true", default=None, help="give the gene head log1p(depth)")
    pt.add_argument("--recon-weight", type=float, help="weight of a shared linear decoder's gene reconstruction")
    em = sub.add_parser("embed", help="SPADE embeddings of feature files")
    em.add_argument("--model", type=Path, required=True)
    em.add_argument("--features", type=Path, required=True)
    em.add_argument("--out", type=Path, required=True)
    em.add_argument("--ids", nargs="+")
    em.add_argument("--topk", type=int, help="sparse routing: only the k heaviest experts per patch")
    em.add_argument("--tau-r", type=float, help="routing temperature (default: the model's)")
    em.add_argument("--device", default="cpu")
    em.add_argument("--data", type=Path, help="HEST root, for --adata")
    em.add_argument(
        "--adata", action="store_true", help="also write OUT/<id>.h5ad: the sample's AnnData with obsm['X_spade']"
    )
    em.add_argument("--overwrite", action="store_true")
    dr = sub.add_parser("doctor", help="check the installation (and a data root); print what to fix")
    dr.add_argument("--data", type=Path)
    dr.add_argument("--weights-dir", type=Path, help="default: $SPADE_ST_WEIGHTS")
    rp = sub.add_parser(
        "report",
        help="write RUN/report.html (self-contained) and RUN/report.md",
        description="Figures and tables of a run folder. Parts are found under RUN by the names `spade-st demo` "
        "writes (data/, features/<encoder>/, model/, embeddings/, results/); point at others with the flags. "
        "What is drawn and what is skipped (and why) is printed.",
    )
    rp.add_argument("run", type=Path, help="run folder (the report is written here)")
    rp.add_argument("--data", type=Path, help="HEST root (default: RUN/data)")
    rp.add_argument("--features", type=Path, help="FEATS/<encoder> (default: RUN/features/<encoder>)")
    rp.add_argument("--model", type=Path, help="model folder (default: RUN/model)")
    rp.add_argument("--embeddings", type=Path, help="`spade-st embed` output (default: RUN/embeddings)")
    pr = sub.add_parser(
        "predict",
        help="predicted expression of every tile of a slide (h5ad + PNG maps) from a model folder",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    pr.add_argument("--model", type=Path, required=True, help="model folder with an expression head")
    pr.add_argument("--features", type=Path, nargs="+", required=True, help="feature file(s): extract-wsi or TRIDENT")
    pr.add_argument("--out", type=Path, required=True, help="writes OUT/<slide>.h5ad and OUT/<slide>_expression.png")
    pr.add_argument("--wsi", type=Path, nargs="+", help="the slides (matched by file stem), for the maps")
    pr.add_argument("--genes", nargs="+", help="genes to predict and map (default: all; the 4 most variable mapped)")
    pr.add_argument("--method", choices=["ridge", "knn"], default="ridge", help="the expression head's method")
    pr.add_argument("--pixel-size-um", type=float, help="level-0 µm/px of slides that carry none")
    pr.add_argument("--data", type=Path, help="HEST root: print Pearson r vs measured for slides that are its samples")
    fp = sub.add_parser(
        "fit-predictor",
        help="fit (or refit) a model's expression head on a HEST root's spots",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    fp.add_argument("--model", type=Path, required=True, help="model folder (predictor.json is written into it)")
    fp.add_argument("--data", type=Path, required=True, help="HEST root with the samples' counts")
    fp.add_argument("--features", type=Path, required=True, help="FEATS/<encoder> of those samples")
    fp.add_argument("--ids", nargs="+", help="samples to fit on (default: the model's training samples)")
    fp.add_argument("--genes", nargs="+", help="genes of the head (default: the model's gene panel)")
    ev = sub.add_parser("evaluate", help="run a task manifest (YAML) over its embedding sources")
    ev.add_argument("task", type=Path)
    ev.add_argument("--out", type=Path, required=True)
    bn = sub.add_parser("bench", help="built-in benchmarks on real data")
    bsub = bn.add_subparsers(dest="bench", required=True)
    bh = bsub.add_parser(
        "her2st",
        help="raw features vs SPADE and its controls on her2st sections (genes, retrieval, few-shot)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    from .eval._names import PROBES, PROTOCOLS, TARGETS, VARIANTS

    bh.add_argument("--data", type=Path, required=True, help="HEST-layout root with the sections")
    bh.add_argument("--features", type=Path, required=True, help="FEATS/<encoder>")
    bh.add_argument("--out", type=Path, required=True, help="results and the per-fold models")
    bh.add_argument("--config", default="her2st", help="pretrain config of the per-fold models")
    bh.add_argument("--epochs", type=int, help="override the config's epochs")
    bh.add_argument("--pretrain-seeds", type=int, default=3, help="models per variant and fold")
    bh.add_argument("--seeds", type=int, default=10, help="few-shot draws per model")
    bh.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="few-shot shots per class")
    bh.add_argument("--n-genes", type=int, default=50, help="most variable genes per fold")
    bh.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS), help="gene targets")
    bh.add_argument("--probes", nargs="+", choices=PROBES, default=list(PROBES), help="gene probes")
    bh.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS))
    bh.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="SPADE sources")
    bh.add_argument(
        "--gene-exclude", nargs="*", default=["A1"], help="sections kept out of gene regression (none: no value)"
    )
    bh.add_argument("--label-section", default="A1", help="section with pathologist labels for few-shot")
    c = sub.add_parser("check", help="validate a HEST-layout root and list its samples")
    c.add_argument("--data", type=Path, required=True)
    c.add_argument("--ids", nargs="+")
    c.add_argument("--require-wsi", action="store_true")
    return p


_COMMANDS = {
    "convert": _cmd_convert,
    "demo-data": _cmd_demo_data,
    "demo": _cmd_demo,
    "check": _cmd_check,
    "extract": _cmd_extract,
    "extract-wsi": _cmd_extract_wsi,
    "encoders": _cmd_encoders,
    "pretrain": _cmd_pretrain,
    "embed": _cmd_embed,
    "bench": _cmd_bench,
    "evaluate": _cmd_evaluate,
    "report": _cmd_report,
    "predict": _cmd_predict,
    "fit-predictor": _cmd_fit_predictor,
    "doctor": _cmd_doctor,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 bad input, 2 usage)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere, before or after the subcommand
    args = parser.parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    try:
        return _COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, ImportError, KeyError) as err:
        if args.debug:
            raise
        one_line = " | ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"spade-st: error: {one_line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover - interactive
        print("spade-st: interrupted; run the same command again to resume (finished steps are kept)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
