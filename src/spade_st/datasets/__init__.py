"""Built-in datasets: a deterministic synthetic HEST-layout dataset for demos and tests, and the converter of
the five her2st sections shipped for development."""

from .her2st_subset import HER2ST_SECTIONS, convert_her2st_subset
from .synthetic import REGIONS, SyntheticConfig, synthetic

__all__ = ["HER2ST_SECTIONS", "REGIONS", "SyntheticConfig", "convert_her2st_subset", "synthetic"]
