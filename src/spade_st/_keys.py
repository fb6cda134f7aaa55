"""Names of AnnData fields and on-disk keys, in one place (as scanpy does)."""

from __future__ import annotations

SPATIAL = "spatial"  #: ``obsm`` key: spot centres in level-0 pixels of the sample's WSI
SPADE = "X_spade"  #: ``obsm`` key: SPADE embeddings
LABEL = "label"  #: ``obs`` key: pathologist region label (missing = unlabelled)
UNS = "spade"  #: ``uns`` key holding spade-st parameters


def features_key(encoder: str) -> str:
    """``obsm`` key of the features of ``encoder`` (``X_<encoder>``)."""
    return f"X_{encoder}"


# HEST-1k layout
METADATA_CSV = "metadata.csv"
HEST_TABLE = "HEST_v1_1_0.csv"
ST_DIR = "st"
WSI_DIR = "wsis"
PATCH_DIR = "patches"
META_DIR = "metadata"

# patch h5 datasets / attributes
PATCH_IMG = "img"
PATCH_COORDS = "coords"
PATCH_BARCODE = "barcode"

PATCH_SIZE = 224  #: patch side in pixels
PATCH_PIXEL_SIZE_UM = 0.5  #: µm per pixel of patches (20x)
VISIUM_SPOT_UM = 55.0  #: Visium spot diameter (µm): pixel sizes from scanpy's scale factors, a spot size if unknown

#: Columns of the HEST-1k metadata table that spade-st reads or writes.
METADATA_COLUMNS = (
    "dataset_title",
    "id",
    "image_filename",
    "organ",
    "disease_state",
    "oncotree_code",
    "species",
    "patient",
    "st_technology",
    "data_publication_date",
    "license",
    "study_link",
    "download_page_link1",
    "inter_spot_dist",
    "spot_diameter",
    "spots_under_tissue",
    "preservation_method",
    "nb_genes",
    "treatment_comment",
    "pixel_size_um_embedded",
    "pixel_size_um_estimated",
    "magnification",
    "fullres_px_width",
    "fullres_px_height",
    "tissue",
    "disease_comment",
    "subseries",
    "hest_version_added",
)

#: an expression head's genes whose cross-validated Pearson r is below this are "not predicted" (drawn as such)
PREDICTED_R = 0.1
