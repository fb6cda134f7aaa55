"""Plots from AnnData (scanpy style: ``adata`` first, keyword options, ``ax=``/``save=``; Axes or, for
multi-panel plots, a Figure returned).

Result tables and slides have their own modules: :mod:`spade_st.pl.curves` (few-shot curves, clustering QC)
and :mod:`spade_st.pl.slides` (ABMIL attention). None of them changes matplotlib's backend.
"""

from . import curves, slides
from .embedding import embedding
from .spatial import gene_maps, routing_map, spatial

__all__ = ["curves", "embedding", "gene_maps", "routing_map", "slides", "spatial"]
