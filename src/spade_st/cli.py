"""The ``spade-st`` command line. Thin: it parses flags into config objects and calls the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from ._cli_convert import NO_DEFAULT, _add_convert, _add_export
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
    _cmd_export,
    _cmd_extract,
    _cmd_extract_wsi,
    _cmd_finetune,
    _cmd_fit_predictor,
    _cmd_predict_view,
    _cmd_pretrain,
    _cmd_report,
    _cmd_run,
    _cmd_view,
)
from ._help import about

#: ArgumentDefaultsHelpFormatter appends "(default: <value>)" to every help text that does not mention
#: ``%(default)``. Help texts that say in words what an unset (None) flag means end with NO_DEFAULT: it prints
#: nothing and keeps "(default: None)" from contradicting them.
DEVICE_HELP = "torch device, e.g. cuda, cuda:1 or cpu (default: CUDA if available, else CPU)" + NO_DEFAULT
FMT = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}


def _add_pretrain(sub) -> None:
    from .train.config import PretrainConfig

    base = PretrainConfig()

    def cfg(text: str, name: str, shown: str | None = None) -> str:
        """Help of a flag that overrides a config value: unset, the --config value (else the built-in) holds."""
        value = base.get(name) if shown is None else shown
        return f"{text} (default: the --config value, else {value})" + NO_DEFAULT

    pt = sub.add_parser("pretrain", help="train the SPADE experts (resumable)", **about("pretrain"))
    pt.add_argument(
        "--config", type=Path, help="YAML file or built-in name (demo, her2st, ...); flags override it" + NO_DEFAULT
    )
    pt.add_argument(
        "--data",
        type=Path,
        help="HEST-layout root (from `spade-st convert`); required here or in --config" + NO_DEFAULT,
    )
    pt.add_argument(
        "--features",
        type=Path,
        help="FEATS/<encoder> from `spade-st extract`; required here or in --config" + NO_DEFAULT,
    )
    pt.add_argument(
        "--out", type=Path, help="model folder to write (rerun to resume); required here or in --config" + NO_DEFAULT
    )
    pt.add_argument("--exclude", nargs="+", help="sample ids kept out of every step (default: none)" + NO_DEFAULT)
    pt.add_argument("--k1", type=int, help=cfg("stage-1 k-means clusters per group (organ)", "k1"))
    pt.add_argument(
        "--experts", dest="n_experts", type=int, help=cfg("number of experts (stage-2 clusters)", "n_experts")
    )
    pt.add_argument("--epochs", type=int, help=cfg("training epochs", "epochs"))
    pt.add_argument("--batch-size", type=int, help=cfg("spots per training batch", "batch_size"))
    pt.add_argument("--device", help=DEVICE_HELP)
    pt.add_argument("--seed", type=int, help=cfg("random seed (split, clustering, training)", "seed"))
    pt.add_argument("--lr", type=float, help=cfg("learning rate (AdamW)", "lr"))
    pt.add_argument("--loss", choices=["bleep", "infonce"], help=cfg("contrastive loss", "loss"))
    pt.add_argument(
        "--gene-mode", choices=["log1p", "raw"], help=cfg("gene input: log1p CP10k or raw counts", "gene_mode")
    )
    pt.add_argument(
        "--early-stop", type=int, help=cfg("patience in epochs per expert", "early_stop", "none: all epochs")
    )
    pt.add_argument(
        "--min-expert-spots",
        type=int,
        help=cfg("fewest training spots per expert (0: no rule)", "min_expert_spots", "the batch size"),
    )
    pt.add_argument(
        "--output",
        choices=["spade", "residual", "concat"],
        help=cfg("embedding: experts only (paper), a fixed PCA projection + experts, or both concatenated", "output"),
    )
    pt.add_argument(
        "--shared-gene-head",
        action="store_true",
        default=None,
        help=cfg("one gene head for all experts", "shared_gene_head"),
    )
    pt.add_argument(
        "--gene-smoothing",
        type=float,
        help=cfg("average the gene input over spots within N spot pitches (0: off)", "gene_smoothing"),
    )
    pt.add_argument(
        "--gene-library-size",
        action="store_true",
        default=None,
        help=cfg("give the gene head log1p(depth)", "gene_library_size"),
    )
    pt.add_argument(
        "--recon-weight",
        type=float,
        help=cfg("weight of a shared linear decoder's gene reconstruction (0: off)", "recon_weight"),
    )


def _add_finetune(sub) -> None:
    ft = sub.add_parser(
        "finetune", help="fine-tune an encoder against spot expression (an encoder folder)", **about("finetune")
    )
    ft.add_argument("--data", type=Path, help="HEST-layout root; required here or in --config" + NO_DEFAULT)
    ft.add_argument("--encoder", help="registered encoder to fine-tune (default: efficientnet_lite0)" + NO_DEFAULT)
    ft.add_argument("--weights", type=Path, help="its local weights (default: as `extract`)" + NO_DEFAULT)
    ft.add_argument("--out", type=Path, help="encoder folder to write (rerun to resume)" + NO_DEFAULT)
    ft.add_argument("--exclude", nargs="+", help="sample ids kept out of every step (default: none)" + NO_DEFAULT)
    ft.add_argument(
        "--config", help="finetune options: YAML file or built-in name (finetune_hest1k_uni); flags override it"
        + NO_DEFAULT,
    )
    ft.add_argument("--seed", type=int, help="split, heads, order, views and dropout (default: 42)" + NO_DEFAULT)
    ft.add_argument(
        "--permute-expression",
        action="store_true",
        default=None,
        help="control: permute expression rows across the spots of each section" + NO_DEFAULT,
    )
    ft.add_argument("--method", choices=["auto", "blocks", "lora"], help="what trains (default: auto)" + NO_DEFAULT)
    ft.add_argument("--train-blocks", type=int, help="CNNs: last N blocks trained (default: 2)" + NO_DEFAULT)
    ft.add_argument("--epochs", type=int, help="most epochs (default: 20)" + NO_DEFAULT)
    ft.add_argument(
        "--views", type=int, choices=[1, 2, 4, 8], help="dihedral views per patch (default: 8)" + NO_DEFAULT
    )
    ft.add_argument("--cache-dir", type=Path, help="prefix cache folder (default: OUT/cache)" + NO_DEFAULT)
    ft.add_argument(
        "--loss", choices=["bleep", "infonce"], help="contrastive loss (default: bleep, as SPADE)" + NO_DEFAULT
    )
    ft.add_argument("--dry-run", action="store_true", help="print the plan and its cost; read nothing but the table")
    ft.add_argument(
        "--gpu-tflops", type=float, help="GPU throughput a dry run assumes (default: 400 TFLOP/s)" + NO_DEFAULT
    )
    ft.add_argument("--device", help=DEVICE_HELP)


def _add_run(sub) -> None:
    from .run import STAGES

    r = sub.add_parser(
        "run",
        help="extract -> pretrain -> embed -> evaluate -> report in one resumable command",
        **about("run"),
    )
    r.add_argument("--config", required=True, help="pretraining config: YAML file or built-in name")
    r.add_argument("--data", type=Path, required=True, help="HEST-layout root (HEST-1k's own table is read as is)")
    r.add_argument("--out", type=Path, required=True, help="run folder (features/, model/, embeddings/, results/)")
    r.add_argument("--exclude", nargs="+", help="sample ids held out of pretraining (default: none)" + NO_DEFAULT)
    r.add_argument(
        "--tasks", type=Path, nargs="+", default=[], help="task manifests for the evaluate stage (default: none)"
    )
    r.add_argument("--from", dest="from_stage", choices=STAGES, help="first stage (default: extract)" + NO_DEFAULT)
    r.add_argument("--until", choices=STAGES, help="last stage (default: report)" + NO_DEFAULT)
    r.add_argument("--dry-run", action="store_true", help="print the plan and its cost; read nothing but the table")
    r.add_argument(
        "--gpu-tflops", type=float, help="GPU throughput a dry run assumes (default: 400 TFLOP/s)" + NO_DEFAULT
    )
    r.add_argument(
        "--weights", type=Path, help="encoder weights file or snapshot folder (default: as extract)" + NO_DEFAULT
    )
    r.add_argument("--device", help=DEVICE_HELP)
    r.add_argument(
        "--allow-train-overlap", action="store_true", help="let the evaluate stage score training samples (marked)"
    )


def _add_bench_hest(bsub) -> None:
    from .eval.hest_bench import PRECISIONS

    bt = bsub.add_parser(
        "hest",
        help="HEST-Benchmark on its bench_data folder (its splits, genes, probe), with HEST's result files",
        **about("bench hest"),
    )
    bt.add_argument(
        "--bench-data", type=Path, required=True, help="HEST-Benchmark bench_data folder (IDC/, PRAD/, ...)"
    )
    bt.add_argument("--out", type=Path, required=True, help="HEST's result files and results.csv/.md")
    bt.add_argument("--tasks", nargs="+", help="task folders to run (default: every task found)" + NO_DEFAULT)
    bt.add_argument(
        "--encoder", help="extract features from the folder's patches with this encoder (or --features)" + NO_DEFAULT
    )
    bt.add_argument(
        "--weights", type=Path, help="--encoder's weights (default: $SPADE_ST_WEIGHTS/<encoder>/)" + NO_DEFAULT
    )
    bt.add_argument(
        "--features", type=Path, help="precomputed DIR/<sample>.h5 (or DIR/<task>/<sample>.h5) instead" + NO_DEFAULT
    )
    bt.add_argument("--model", type=Path, nargs="+", default=[], help="SPADE model folders scored on the same features")
    bt.add_argument(
        "--allow-overlap",
        "--allow-train-overlap",
        dest="allow_overlap",
        action="store_true",
        help="score a model on splits holding samples it trained on (marked in the tables)",
    )
    bt.add_argument("--gene-list", default="var_50genes.json", help="each task's gene list JSON (HEST's gene_list)")
    bt.add_argument("--batch-size", type=int, default=128, help="patches per encoder batch (HEST's chunk size)")
    bt.add_argument("--precision", choices=PRECISIONS, default="fp32", help="--encoder's precision on GPU")
    bt.add_argument("--device", help=DEVICE_HELP)


def _add_view(sub) -> None:
    vw = sub.add_parser(
        "view", help="a zoomable slide viewer of predicted expression that opens from disk", **about("view")
    )
    vw.add_argument("--wsi", type=Path, nargs="+", required=True, help="the slide(s) the predictions were made on")
    vw.add_argument(
        "--predictions", type=Path, required=True, help="what `spade-st predict --out` wrote (or one .h5ad)"
    )
    vw.add_argument("--out", type=Path, required=True, help="writes OUT/<slide>/index.html, its tiles and overlays")
    vw.add_argument(
        "--sample",
        nargs="+",
        help="the predictions' names of the --wsi slides, in order (default: the slides' file stems)" + NO_DEFAULT,
    )
    vw.add_argument(
        "--model", type=Path, help="model folder: adds the expert routing of each tile (default: none)" + NO_DEFAULT
    )
    vw.add_argument(
        "--data",
        type=Path,
        help="HEST root: adds measured expression where a slide is one of its samples (default: none)" + NO_DEFAULT,
    )
    vw.add_argument(
        "--pixel-size-um",
        type=float,
        help="level-0 µm/px of slides that record none (default: the slide's, else the feature file's)" + NO_DEFAULT,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spade-st", description="SPADE: ST-shaped pathology embeddings", **FMT)
    p.add_argument("--version", action="version", version=f"spade-st {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    _add_convert(sub)
    _add_export(sub)
    d = sub.add_parser("demo-data", help="write the built-in synthetic dataset (HEST layout)", **about("demo-data"))
    d.add_argument("--out", type=Path, required=True, help="HEST-layout root to write")
    d.add_argument("--samples", type=int, default=6, help="number of samples (spread over 3 organs)")
    d.add_argument("--spots", type=int, default=300, help="spots per sample")
    d.add_argument("--genes", type=int, default=300, help="number of genes (one panel for all samples)")
    d.add_argument("--seed", type=int, default=0, help="random seed")
    d.add_argument("--overwrite", action="store_true", help="replace samples already in --out")
    dm = sub.add_parser("demo", help="run the whole pipeline on synthetic data and write a report", **about("demo"))
    dm.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (data, features, model, report)")
    dm.add_argument("--samples", type=int, default=8, help="synthetic samples")
    dm.add_argument("--spots", type=int, default=200, help="spots per sample")
    dm.add_argument("--seed", type=int, default=0, help="random seed of the synthetic data")
    dm.add_argument(
        "--epochs", type=int, help="override the epochs of configs/demo.yaml (default: the file's)" + NO_DEFAULT
    )
    e = sub.add_parser("extract", help="features of every spot patch of a HEST root", **about("extract"))
    e.add_argument("--data", type=Path, required=True, help="HEST-layout root (from `spade-st convert`)")
    e.add_argument("--encoder", default="efficientnet_lite0", help="see `spade-st encoders`")
    e.add_argument(
        "--weights",
        type=Path,
        help="weights file or Hugging Face snapshot folder (default: $SPADE_ST_WEIGHTS/<encoder>/)" + NO_DEFAULT,
    )
    e.add_argument("--out", type=Path, required=True, help="features root: writes OUT/<encoder>/<sample id>.h5")
    e.add_argument("--batch-size", type=int, help="patches per batch (default: 256 on GPU, 16 on CPU)" + NO_DEFAULT)
    e.add_argument("--device", help=DEVICE_HELP)
    e.add_argument("--num-workers", type=int, default=0, help="data-loader processes reading patches (0: in-process)")
    e.add_argument("--ids", nargs="+", help="sample ids to extract (default: every sample of --data)" + NO_DEFAULT)
    e.add_argument("--overwrite", action="store_true", help="recompute feature files that are already complete")
    ew = sub.add_parser("extract-wsi", help="tissue tiles of whole slides and their features", **about("extract-wsi"))
    ew.add_argument(
        "--wsi", type=Path, action="append", required=True, help="a slide, or a folder of slides (repeat for more)"
    )
    ew.add_argument("--encoder", default="efficientnet_lite0", help="see `spade-st encoders`")
    ew.add_argument(
        "--weights",
        type=Path,
        help="weights file or Hugging Face snapshot folder (default: $SPADE_ST_WEIGHTS/<encoder>/)" + NO_DEFAULT,
    )
    ew.add_argument("--out", type=Path, required=True, help="features root: writes OUT/<encoder>/<slide stem>.h5")
    ew.add_argument(
        "--pixel-size-um",
        type=float,
        help="µm/px of level 0 for slides that record none; one more than 5%% off a slide's own value is refused "
        "(default: the slide's)" + NO_DEFAULT,
    )
    ew.add_argument(
        "--force-pixel-size",
        action="store_true",
        help="use --pixel-size-um even where the slide records another value (recorded in the feature file)",
    )
    ew.add_argument("--tile-size", type=int, default=224, help="tile side in pixels at --target-um")
    ew.add_argument("--target-um", type=float, default=0.5, help="µm per pixel of the tiles (0.5: 20x)")
    ew.add_argument("--batch-size", type=int, default=64, help="tiles per batch")
    ew.add_argument("--device", help=DEVICE_HELP)
    ew.add_argument(
        "--min-tissue", type=float, default=0.25, help="least tissue fraction (0-1) a tile needs to be kept"
    )
    ew.add_argument("--overwrite", action="store_true", help="recompute feature files that are already complete")
    sub.add_parser("encoders", help="list the registered encoders", **about("encoders"))
    _add_pretrain(sub)
    _add_finetune(sub)
    _add_run(sub)
    em = sub.add_parser("embed", help="SPADE embeddings of feature files", **about("embed"))
    em.add_argument("--model", type=Path, required=True, help="model folder (the --out of `spade-st pretrain`)")
    em.add_argument(
        "--features", type=Path, required=True, help="FEATS/<encoder> from `spade-st extract(-wsi)`, or one .h5 file"
    )
    em.add_argument(
        "--encoder",
        help="the files' encoder, for files that do not name it (TRIDENT's; default: as the file or its "
        "features_<encoder> folder says)" + NO_DEFAULT,
    )
    em.add_argument("--out", type=Path, required=True, help="writes OUT/<id>.h5 (embeddings, expert weights)")
    em.add_argument("--ids", nargs="+", help="embed only FEATURES/<id>.h5 (default: every .h5)" + NO_DEFAULT)
    em.add_argument(
        "--topk", type=int, help="sparse routing: only the k heaviest experts per patch (default: all)" + NO_DEFAULT
    )
    em.add_argument("--tau-r", type=float, help="routing temperature (default: the model's)" + NO_DEFAULT)
    em.add_argument("--device", help=DEVICE_HELP)
    em.add_argument("--data", type=Path, help="HEST root the features came from, for --adata")
    em.add_argument(
        "--adata", action="store_true", help="also write OUT/<id>.h5ad: the sample's AnnData with obsm['X_spade']"
    )
    em.add_argument("--overwrite", action="store_true", help="recompute embedding files that are already complete")
    dr = sub.add_parser(
        "doctor", help="check the installation (and a config, a data root); print what to fix", **about("doctor")
    )
    dr.add_argument("--data", type=Path, help="HEST-layout root to validate (default: none checked)" + NO_DEFAULT)
    dr.add_argument("--weights-dir", type=Path, help="encoder weights folder (default: $SPADE_ST_WEIGHTS)" + NO_DEFAULT)
    dr.add_argument(
        "--config", help="pretraining config (name or YAML) whose encoder weights and packages are needed" + NO_DEFAULT
    )
    rp = sub.add_parser(
        "report",
        help="write RUN/report.html (self-contained) and RUN/report.md",
        **about("report"),
    )
    rp.add_argument("run", type=Path, help="run folder (the report is written here)")
    rp.add_argument("--data", type=Path, help="HEST root (default: RUN/data)" + NO_DEFAULT)
    rp.add_argument("--features", type=Path, help="FEATS/<encoder> (default: RUN/features/<encoder>)" + NO_DEFAULT)
    rp.add_argument("--model", type=Path, help="model folder (default: RUN/model)" + NO_DEFAULT)
    rp.add_argument("--embeddings", type=Path, help="`spade-st embed` output (default: RUN/embeddings)" + NO_DEFAULT)
    pr = sub.add_parser(
        "predict",
        help="predicted expression of every tile of a slide (h5ad + PNG maps) from a model folder",
        **about("predict"),
    )
    pr.add_argument("--model", type=Path, required=True, help="model folder with an expression head")
    pr.add_argument(
        "--features", type=Path, nargs="+", required=True, help="feature file(s) or folder(s): extract-wsi or TRIDENT"
    )
    pr.add_argument("--out", type=Path, required=True, help="writes OUT/<slide>.h5ad and OUT/<slide>_expression.png")
    pr.add_argument("--wsi", type=Path, nargs="+", help="the slides (matched by file stem), for the maps")
    pr.add_argument(
        "--genes",
        nargs="+",
        help="genes to predict and map (default: all; the 4 best predicted (cross-validated r) mapped)" + NO_DEFAULT,
    )
    pr.add_argument("--method", choices=["ridge", "knn"], default="ridge", help="the expression head's method")
    pr.add_argument(
        "--encoder", help="the files' encoder, for files that do not name it (default: as the file says)" + NO_DEFAULT
    )
    pr.add_argument(
        "--pixel-size-um",
        type=float,
        help="level-0 µm/px of slides that carry none (default: the slide's)" + NO_DEFAULT,
    )
    pr.add_argument("--data", type=Path, help="HEST root: print Pearson r vs measured for slides that are its samples")
    pr.add_argument(
        "--allow-train-overlap",
        action="store_true",
        help="with --data: also score slides the model trained on (marked in-sample in the printout)",
    )
    pr.add_argument(
        "--organ",
        help="the slides' organ, checked against the organs the head was fitted on (default: from --data, else "
        "a one-line caveat)" + NO_DEFAULT,
    )
    pr.add_argument(
        "--view",
        type=Path,
        help="also write the zoomable viewer of each --wsi slide into VIEW/<slide>/ (as `spade-st view`; default: "
        "none)" + NO_DEFAULT,
    )
    _add_view(sub)
    fp = sub.add_parser(
        "fit-predictor",
        help="fit (or refit) a model's expression head on a HEST root's spots",
        **about("fit-predictor"),
    )
    fp.add_argument("--model", type=Path, required=True, help="model folder (predictor.json is written into it)")
    fp.add_argument("--data", type=Path, required=True, help="HEST root with the samples' counts")
    fp.add_argument("--features", type=Path, required=True, help="FEATS/<encoder> of those samples")
    fp.add_argument("--ids", nargs="+", help="samples to fit on (default: the model's training samples)" + NO_DEFAULT)
    fp.add_argument(
        "--genes",
        nargs="+",
        help="genes to add to the model's head (all refitted together; default: the model's gene panel)" + NO_DEFAULT,
    )
    fp.add_argument("--replace", action="store_true", help="with --genes: a head of exactly these genes instead")
    ev = sub.add_parser("evaluate", help="run a task manifest (YAML) over its embedding sources", **about("evaluate"))
    ev.add_argument("task", type=Path, help="task manifest YAML (e.g. configs/tasks/*.yaml)")
    ev.add_argument("--out", type=Path, required=True, help="writes OUT/results.csv, results_long.csv, results.md")
    ev.add_argument(
        "--allow-train-overlap",
        action="store_true",
        help="score sources whose model trained on a scored sample or patient (marked in_sample in the table)",
    )
    bn = sub.add_parser("bench", help="built-in benchmarks on real data", **about("bench"))
    bsub = bn.add_subparsers(dest="bench", required=True)
    bh = bsub.add_parser(
        "her2st",
        help="raw features vs SPADE and its controls on her2st sections (genes, retrieval, few-shot)",
        **about("bench her2st"),
    )
    from .eval._names import PROBES, PROTOCOLS, TARGETS, VARIANTS

    bh.add_argument("--data", type=Path, required=True, help="HEST-layout root with the sections")
    bh.add_argument("--features", type=Path, required=True, help="FEATS/<encoder>")
    bh.add_argument("--out", type=Path, required=True, help="results and the per-fold models")
    bh.add_argument("--config", default="her2st", help="pretrain config of the per-fold models")
    bh.add_argument("--epochs", type=int, help="override the config's epochs (default: the config's)" + NO_DEFAULT)
    bh.add_argument("--pretrain-seeds", type=int, default=3, help="models per variant and fold")
    bh.add_argument("--seeds", type=int, default=10, help="few-shot draws per model")
    bh.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="few-shot shots per class")
    bh.add_argument("--n-genes", type=int, default=50, help="most variable genes per fold")
    bh.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS), help="gene targets")
    bh.add_argument("--probes", nargs="+", choices=PROBES, default=list(PROBES), help="gene probes")
    bh.add_argument(
        "--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS), help="gene-expression fold protocols"
    )
    bh.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="SPADE sources")
    bh.add_argument(
        "--gene-exclude", nargs="*", default=["A1"], help="sections kept out of gene regression (none: no value)"
    )
    bh.add_argument("--label-section", default="A1", help="section with pathologist labels for few-shot")
    _add_bench_hest(bsub)
    c = sub.add_parser("check", help="validate a HEST-layout root and list its samples", **about("check"))
    c.add_argument("--data", type=Path, required=True, help="HEST-layout root (from `spade-st convert`)")
    c.add_argument("--ids", nargs="+", help="sample ids to check (default: every sample)" + NO_DEFAULT)
    c.add_argument("--require-wsi", action="store_true", help="also require each sample's wsis/<id>.tif")
    return p


_COMMANDS = {
    "convert": _cmd_convert,
    "export": _cmd_export,
    "demo-data": _cmd_demo_data,
    "demo": _cmd_demo,
    "check": _cmd_check,
    "extract": _cmd_extract,
    "extract-wsi": _cmd_extract_wsi,
    "encoders": _cmd_encoders,
    "pretrain": _cmd_pretrain,
    "finetune": _cmd_finetune,
    "embed": _cmd_embed,
    "bench": _cmd_bench,
    "evaluate": _cmd_evaluate,
    "report": _cmd_report,
    "run": _cmd_run,
    "predict": _cmd_predict_view,
    "view": _cmd_view,
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
    import warnings

    from ._validation import DataWarning

    def one_line(message, category, *_args, **_kw):
        return (
            f"spade-st: warning: {message}\n"
            if issubclass(category, DataWarning | FutureWarning)
            else f"{category.__name__}: {message}\n"
        )

    before, warnings.formatwarning = warnings.formatwarning, one_line  # for this command only
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
    finally:
        warnings.formatwarning = before


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
