"""The five her2st sections shipped for development (../shared/data/her2st_subset), with their geometry."""

from __future__ import annotations

from pathlib import Path

from ..io.her2st import Her2stConfig, convert_her2st
from ..io.layout import Layout, read_metadata

#: section -> (image file, µm/px of that image, coordinate scale to that image, patient)
HER2ST_SECTIONS: dict[str, tuple[str, float, float, str]] = {
    "A1": ("A1_HE_image_dark.png", 3.185, 2000 / 6954, "A"),
    "B4": ("B4_BT10737_D2_HE.jpg", 0.687, 1.0, "B"),
    "C2": ("C2_5714_HE_BT_C2.jpg", 0.687, 1.0, "C"),
    "C3": ("C3_5714_HE_BT_D1.jpg", 0.687, 1.0, "C"),
    "C4": ("C4_5714_HE_BT_D2.jpg", 0.687, 1.0, "C"),
}


def convert_her2st_subset(src: Path | str, out: Path | str, progress: bool = True) -> Path:
    """Convert every section of the her2st subset folder ``src`` into ``out``; finished sections are kept."""
    src, out = Path(src), Path(out)
    have = set(read_metadata(out).index) if Layout(out).table_path() else set()
    for sid, (image, px, scale, patient) in HER2ST_SECTIONS.items():
        if sid in have:
            continue
        labels = src / "labels" / f"{sid}_labeled_coordinates.tsv"
        convert_her2st(
            Her2stConfig(
                counts=src / "counts" / f"{sid}.tsv.gz",
                spots=src / "spots" / f"{sid}_selection.tsv",
                image=src / "images" / image,
                sample_id=sid,
                pixel_size_um=px,
                out=out,
                coord_scale=scale,
                patient=patient,
                labels=labels if labels.is_file() else None,
            ),
            progress=progress,
        )
    return out
