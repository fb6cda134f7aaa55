"""What ``spade-st SUBCOMMAND --help`` says above and below the flags: one sentence, and one example command line."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown after each flag; the description and epilog wrapped line by line, so an example command
    keeps its own (indented) line instead of being run into the text above it."""

    def _fill_text(self, text, width, indent):
        lines = []
        for line in text.splitlines():
            if line.startswith(" "):  # an example: as written
                lines.append(indent + line)
            else:
                lines.append(super()._fill_text(line, width, indent) if line.strip() else "")
        return "\n".join(lines)


#: subcommand (as typed, "convert her2st") -> (one-sentence description, one example command line)
ABOUT = {
    "convert": (
        "Convert a dataset (legacy ST tables, Space Ranger output or an .h5ad) into the HEST-1k layout.",
        "spade-st convert visium --spaceranger outs/ --sample-id S1 --out HEST_ROOT",
    ),
    "convert her2st": (
        "Write one her2st section (counts table, spot selection, H&E image) as a HEST-layout sample.",
        "spade-st convert her2st --counts C2.tsv.gz --spots C2_selection.tsv --image C2.jpg --sample-id C2 "
        "--pixel-size-um 0.687 --out HEST_ROOT",
    ),
    "convert visium": (
        "Write one Space Ranger output folder as a HEST-layout sample.",
        "spade-st convert visium --spaceranger outs/ --sample-id S1 --out HEST_ROOT",
    ),
    "convert anndata": (
        "Write an .h5ad with raw counts and spot centres, and its H&E image, as a HEST-layout sample.",
        "spade-st convert anndata --adata S1.h5ad --image S1.tif --sample-id S1 --species 'Homo sapiens' "
        "--pixel-size-um 0.5 --out HEST_ROOT",
    ),
    "convert spatialdata": (
        "Write one table of spots of a SpatialData store (spatialdata-io's Visium reader, `spade-st export "
        "spatialdata`) with its image as a HEST-layout sample; needs the [scverse] extra.",
        "spade-st convert spatialdata --zarr visium.zarr --sample-id S1 --species 'Mus musculus' --out HEST_ROOT",
    ),
    "export": (
        "Write spade-st's samples and predictions in another tool's format.",
        "spade-st export spatialdata --data HEST_ROOT --sample-id C2 --features FEATS/efficientnet_lite0 --out C2.zarr",
    ),
    "export spatialdata": (
        "Write a HEST sample (image, spot circles, counts, features) or a predicted slide (image, tile squares, "
        "predicted genes) as a SpatialData .zarr, in pixel and µm coordinates; needs the [scverse] extra.",
        "spade-st export spatialdata --prediction preds/slide.h5ad --wsi slide.svs --out slide.zarr",
    ),
    "demo-data": (
        "Write the built-in synthetic dataset (a few samples over three organs) in the HEST layout.",
        "spade-st demo-data --out runs/demo-data --samples 6",
    ),
    "demo": (
        "Run the whole pipeline on synthetic data in a few minutes on a CPU and write its report.",
        "spade-st demo --out runs/demo --epochs 5",
    ),
    "extract": (
        "Compute frozen-encoder features of every spot patch of a HEST root (sharded over ranks under torchrun).",
        "spade-st extract --data HEST_ROOT --encoder efficientnet_lite0 --out FEATS",
    ),
    "extract-wsi": (
        "Tile whole slides, keep the tissue tiles and compute their features (slides sharded under torchrun).",
        "spade-st extract-wsi --wsi slide.svs --encoder efficientnet_lite0 --out FEATS",
    ),
    "encoders": (
        "List the registered encoders with their feature size.",
        "spade-st encoders",
    ),
    "pretrain": (
        "Train the SPADE experts on a HEST root's features (resumable; DDP under torchrun).",
        "spade-st pretrain --config her2st --data HEST_ROOT --features FEATS/efficientnet_lite0 --out runs/model",
    ),
    "finetune": (
        "Fine-tune an encoder against the spots' expression (last CNN blocks with a cached prefix, or LoRA on a "
        "ViT) on pretrain's patient-disjoint split; writes an encoder folder that --encoder finetuned:DIR reads. "
        "--dry-run prints samples, spots, cache size and compute from the sample table alone.",
        "spade-st finetune --config finetune_hest1k_uni --data HEST_ROOT --out runs/ft --dry-run",
    ),
    "run": (
        "The whole pipeline on one HEST-layout root into one run folder (the layout `spade-st report` reads). "
        "Each stage skips what is already complete; rerun the same command after an interruption. "
        "--dry-run prints samples, spots, sizes and compute from the sample table alone.",
        "spade-st run --config spade_hest1k_uni --data HEST_ROOT --out runs/hest --dry-run",
    ),
    "embed": (
        "Write the SPADE embeddings (and expert weights) of feature files with a trained model.",
        "spade-st embed --model runs/model --features FEATS/efficientnet_lite0 --out runs/embeddings",
    ),
    "doctor": (
        "Check the installation, and what a config and a data root need; exit 1 only when a needed check fails.",
        "spade-st doctor --config her2st --data HEST_ROOT",
    ),
    "report": (
        "Figures and tables of a run folder. Parts are found under RUN by the names `spade-st demo` writes "
        "(data/, features/<encoder>/, model/, embeddings/, results/); point at others with the flags. "
        "What is drawn and what is skipped (and why) is printed.",
        "spade-st report runs/demo",
    ),
    "predict": (
        "Predict the expression of every tile of a slide from a model folder's expression head.",
        "spade-st predict --model runs/model --features FEATS/efficientnet_lite0/slide.h5 --wsi slide.svs --out pred",
    ),
    "view": (
        "Write a zoomable viewer of each slide (tile pyramid + predicted genes, routing, measured expression) "
        "that opens from disk in a browser: no server, no network. Finished pyramid levels are reused.",
        "spade-st view --wsi slide.svs --predictions pred --model runs/model --out view",
    ),
    "fit-predictor": (
        "Fit (or refit) a model folder's expression head on the spots of a HEST root.",
        "spade-st fit-predictor --model runs/model --data HEST_ROOT --features FEATS/efficientnet_lite0",
    ),
    "evaluate": (
        "Run a task manifest over its embedding sources and write the results tables.",
        "spade-st evaluate src/spade_st/configs/tasks/her2st_hest1k_lopo.yaml --out results/lopo",
    ),
    "bench": (
        "Run a built-in benchmark on real data.",
        "spade-st bench her2st --data HEST_ROOT --features FEATS/efficientnet_lite0 --out bench/her2st",
    ),
    "bench her2st": (
        "Compare raw features with SPADE and its controls on the her2st sections (genes, retrieval, few-shot).",
        "spade-st bench her2st --data HEST_ROOT --features FEATS/efficientnet_lite0 --out bench/her2st --epochs 20",
    ),
    "bench hest": (
        "Score raw features and SPADE models on a HEST-Benchmark bench_data folder with HEST's splits, gene lists, "
        "probe and aggregation (plus a CV ridge), writing HEST's result files; a model's splits holding samples it "
        "trained on are refused unless --allow-overlap.",
        "spade-st bench hest --bench-data bench_data --encoder uni --model runs/model --tasks IDC PRAD "
        "--out bench/hest",
    ),
    "check": (
        "Validate a HEST-layout root and list its samples with their patch counts and pixel sizes.",
        "spade-st check --data HEST_ROOT",
    ),
}


def about(command: str) -> dict:
    """``add_parser`` keywords of ``command``: its description, an "example:" epilog and :class:`HelpFormatter`.

    Parameters
    ----------
    command
        The subcommand as typed after ``spade-st`` (``"convert her2st"`` for a nested one).

    Returns
    -------
    dict
        ``description``, ``epilog`` and ``formatter_class``.
    """
    description, example = ABOUT[command]
    return {"description": description, "epilog": f"example:\n  {example}", "formatter_class": HelpFormatter}
