"""Readers and converters: HEST-1k layout, her2st tables, Visium folders, AnnData files, WSIs."""

from .anndata_io import AnnDataConfig, convert_anndata, merge_duplicate_genes
from .features import FeatureSet, read_feature_attrs, write_features
from .her2st import Her2stConfig, convert_her2st, read_her2st
from .hest import HestSample, PatchFile, read_hest
from .layout import Layout, read_metadata
from .patches import extract_patch, iter_patches, patch_box, patch_coords
from .spatialdata_in import SpatialDataConfig, convert_spatialdata
from .spatialdata_out import to_spatialdata, write_spatialdata
from .tiff import write_pyramidal_tiff
from .visium import VisiumConfig, convert_visium, read_10x_h5
from .writer import SampleMeta, write_sample
from .wsi import WSI, open_wsi, read_image

__all__ = [
    "WSI",
    "AnnDataConfig",
    "FeatureSet",
    "Her2stConfig",
    "HestSample",
    "Layout",
    "PatchFile",
    "SampleMeta",
    "SpatialDataConfig",
    "VisiumConfig",
    "convert_anndata",
    "convert_her2st",
    "convert_spatialdata",
    "convert_visium",
    "extract_patch",
    "iter_patches",
    "merge_duplicate_genes",
    "open_wsi",
    "patch_box",
    "patch_coords",
    "read_10x_h5",
    "read_feature_attrs",
    "read_her2st",
    "read_hest",
    "read_image",
    "read_metadata",
    "to_spatialdata",
    "write_features",
    "write_pyramidal_tiff",
    "write_sample",
    "write_spatialdata",
]
