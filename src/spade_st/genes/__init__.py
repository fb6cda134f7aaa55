"""Gene panel (per-sample HVGs united by name) and symbol harmonisation."""

from .panel import LIBRARY_SIZE, GenePanel, build_panel, expression_target, panel_report, sample_hvgs
from .smoothing import smooth_spatial, spot_pitch
from .symbols import canonical, harmonise, read_ensembl_table, sum_duplicates

__all__ = [
    "LIBRARY_SIZE",
    "GenePanel",
    "build_panel",
    "canonical",
    "expression_target",
    "harmonise",
    "panel_report",
    "read_ensembl_table",
    "sample_hvgs",
    "smooth_spatial",
    "spot_pitch",
    "sum_duplicates",
]
