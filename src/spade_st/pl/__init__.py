"""Plots (matplotlib, scanpy-like signatures with ``ax=`` and ``save=``)."""

from .curves import clustering_qc, fewshot_curves
from .embedding import umap, umap_coords
from .spatial import attention_heatmap, gene_maps, routing_map

__all__ = ["attention_heatmap", "clustering_qc", "fewshot_curves", "gene_maps", "routing_map", "umap", "umap_coords"]
