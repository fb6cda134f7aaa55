"""A zoomable slide viewer that opens from disk: tile pyramid + predicted-expression overlays (``spade-st view``)."""

from ._view import ViewConfig, viewer_page, write_viewer, write_viewers

__all__ = ["ViewConfig", "viewer_page", "write_viewer", "write_viewers"]
