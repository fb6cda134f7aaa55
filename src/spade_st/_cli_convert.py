"""The ``convert`` and ``export`` subcommands' flags (the data's way into and out of the HEST layout)."""

from __future__ import annotations

from pathlib import Path

from ._help import about

#: see cli.NO_DEFAULT: help texts that say in words what an unset flag means
NO_DEFAULT = "%(default).0s"


def _add_convert(sub) -> None:
    conv = sub.add_parser("convert", help="convert a dataset into the HEST-1k layout", **about("convert"))
    csub = conv.add_subparsers(dest="format", required=True)

    h = csub.add_parser(
        "her2st",
        help="legacy ST tables (her2st): counts .tsv.gz + spot selection + H&E image",
        **about("convert her2st"),
    )
    h.add_argument("--counts", type=Path, required=True, help="counts table .tsv(.gz): spots (XxY) x genes, raw counts")
    h.add_argument(
        "--spots", type=Path, required=True, help="spot selection .tsv(.gz) with x y pixel_x pixel_y selected"
    )
    h.add_argument("--image", type=Path, required=True, help="the section's full-resolution H&E image")
    h.add_argument("--sample-id", required=True, help="id of the sample in the HEST root (file names, metadata)")
    h.add_argument("--pixel-size-um", type=float, required=True, help="µm per pixel of --image")
    h.add_argument("--out", type=Path, required=True, help="HEST-layout root to write into (created if missing)")
    h.add_argument("--coord-scale", type=float, default=1.0, help="multiply spot pixel coords (for a downscaled image)")
    h.add_argument("--organ", default="Breast", help="organ recorded in the sample metadata")
    h.add_argument("--patient", help="patient id in the metadata (default: the sample id)" + NO_DEFAULT)
    h.add_argument("--labels", type=Path, help="pathologist labels S_labeled_coordinates.tsv -> obs['label']")
    h.add_argument("--overwrite", action="store_true", help="replace the sample if --out already has it")

    v = csub.add_parser("visium", help="a Space Ranger output folder", **about("convert visium"))
    v.add_argument(
        "--spaceranger", type=Path, required=True, help="Space Ranger outs/ folder (filtered matrix .h5 + spatial/)"
    )
    v.add_argument(
        "--image", type=Path, help="full-resolution H&E (default: spatial/tissue_hires_image.png)" + NO_DEFAULT
    )
    v.add_argument("--sample-id", required=True, help="id of the sample in the HEST root (file names, metadata)")
    v.add_argument("--out", type=Path, required=True, help="HEST-layout root to write into (created if missing)")
    v.add_argument(
        "--pixel-size-um",
        type=float,
        help="µm per pixel of the image (default: the image's tags, else from the 55 µm spot diameter)" + NO_DEFAULT,
    )
    v.add_argument("--organ", default="unknown", help="organ recorded in the sample metadata")
    v.add_argument("--patient", help="patient id in the metadata (default: the sample id)" + NO_DEFAULT)
    v.add_argument("--species", default="Homo sapiens", help="species recorded in the sample metadata")
    v.add_argument(
        "--duplicate-genes",
        choices=["error", "sum"],
        default="sum",
        help="repeated gene names: refuse (error) or add their counts (sum)",
    )
    v.add_argument("--overwrite", action="store_true", help="replace the sample if --out already has it")

    a = csub.add_parser(
        "anndata", help="an .h5ad with raw counts and obsm['spatial'] + its H&E image", **about("convert anndata")
    )
    a.add_argument("--adata", type=Path, required=True, help=".h5ad with raw counts and spot centres in image pixels")
    a.add_argument("--image", type=Path, required=True, help="full-resolution H&E image the spot centres refer to")
    a.add_argument("--sample-id", required=True, help="id of the sample in the HEST root (file names, metadata)")
    a.add_argument("--out", type=Path, required=True, help="HEST-layout root to write into (created if missing)")
    a.add_argument(
        "--pixel-size-um",
        type=float,
        help="µm per pixel of --image (default: the image's tags, else uns['spatial'] scale factors)" + NO_DEFAULT,
    )
    a.add_argument("--layer", help="take raw counts from this layer ('raw' for adata.raw; default: X)" + NO_DEFAULT)
    a.add_argument("--spatial-key", default="spatial", help="obsm key of the spot centres (x, y in --image pixels)")
    a.add_argument("--organ", default="unknown", help="organ recorded in the sample metadata")
    a.add_argument(
        "--species",
        help="species recorded in the metadata, e.g. 'Homo sapiens' (default: the AnnData's uns/obs 'species' or "
        "'organism'; required when it has none)" + NO_DEFAULT,
    )
    a.add_argument("--patient", help="patient id in the metadata (default: the sample id)" + NO_DEFAULT)
    a.add_argument("--st-technology", default="unknown", help="ST technology recorded in the metadata, e.g. Visium")
    a.add_argument(
        "--duplicate-genes",
        choices=["error", "sum"],
        default="error",
        help="repeated gene names: refuse (error) or add their counts (sum)",
    )
    a.add_argument("--overwrite", action="store_true", help="replace the sample if --out already has it")

    z = csub.add_parser(
        "spatialdata",
        help="a table of spots and its image from a SpatialData .zarr (spatialdata-io's Visium, ours)",
        **about("convert spatialdata"),
    )
    z.add_argument("--zarr", type=Path, required=True, help="SpatialData store (.zarr folder)")
    z.add_argument("--sample-id", required=True, help="id of the sample in the HEST root (file names, metadata)")
    z.add_argument("--out", type=Path, required=True, help="HEST-layout root to write into (created if missing)")
    z.add_argument("--table", help="table of spot counts (default: the only table, else 'table')" + NO_DEFAULT)
    z.add_argument(
        "--image", help="image element (default: the finest sharing a coordinate system with the spots)" + NO_DEFAULT
    )
    z.add_argument("--layer", help="take raw counts from this layer of the table (default: X)" + NO_DEFAULT)
    z.add_argument(
        "--pixel-size-um",
        type=float,
        help="µm per pixel of the image (default: the store's 'um' system, else the spot diameter)" + NO_DEFAULT,
    )
    z.add_argument("--spot-diameter-um", type=float, help="spot diameter (default: 55 for Visium)" + NO_DEFAULT)
    z.add_argument("--organ", default="unknown", help="organ recorded in the sample metadata")
    z.add_argument("--species", default="Homo sapiens", help="species recorded in the sample metadata")
    z.add_argument("--patient", help="patient id in the metadata (default: the sample id)" + NO_DEFAULT)
    z.add_argument("--st-technology", default="Visium", help="ST technology recorded in the metadata")
    z.add_argument("--overwrite", action="store_true", help="replace the sample if --out already has it")


def _add_export(sub) -> None:
    ex = sub.add_parser("export", help="write spade-st's data in another tool's format", **about("export"))
    esub = ex.add_subparsers(dest="format", required=True)
    z = esub.add_parser(
        "spatialdata",
        help="a HEST sample or a predicted slide as a SpatialData .zarr (image, spots/tiles, tables)",
        **about("export spatialdata"),
    )
    z.add_argument("--out", type=Path, required=True, help="the .zarr store to write")
    z.add_argument("--data", type=Path, help="HEST-layout root (with --sample-id)" + NO_DEFAULT)
    z.add_argument("--sample-id", help="the sample of --data to write" + NO_DEFAULT)
    z.add_argument("--prediction", type=Path, help="`spade-st predict`'s .h5ad, as tables['predicted']" + NO_DEFAULT)
    z.add_argument("--wsi", type=Path, help="the slide --prediction was made on (without --data)" + NO_DEFAULT)
    z.add_argument(
        "--features",
        type=Path,
        nargs="+",
        default=[],
        help="feature/embedding files (or folders of <sample-id>.h5) added as obsm X_<encoder>, X_spade",
    )
    z.add_argument("--pixel-size-um", type=float, help="level-0 µm/px of a slide that records none" + NO_DEFAULT)
    z.add_argument("--overwrite", action="store_true", help="replace an existing store")
