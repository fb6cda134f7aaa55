"""spade-st: SPADE pathology embeddings shaped by spatial transcriptomics."""

__version__ = "0.1.0"
