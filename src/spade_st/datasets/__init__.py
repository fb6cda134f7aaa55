"""Built-in datasets: a deterministic synthetic HEST-layout dataset for demos and tests."""

from .synthetic import REGIONS, SyntheticConfig, synthetic

__all__ = ["REGIONS", "SyntheticConfig", "synthetic"]
