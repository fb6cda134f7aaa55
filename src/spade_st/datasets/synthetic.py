"""A deterministic synthetic HEST-layout dataset with H&E-like tissue and region-tied gene programs.

Each sample is a tissue image at 1 µm/px made of four region types with distinct colour and texture
(tumour: dense large purple nuclei; stroma: pink fibres, sparse elongated nuclei; immune: dense small dark
nuclei; adipose: white vacuoles with thin pink septa), tinted per organ. Spots lie on a 100 µm grid; each
spot's expression is a negative-binomial draw whose mean mixes the region programs in proportion to the
region areas under the spot (55 µm disc), plus organ and patient effects and library-size variation. So
image features carry real information about expression, and a model can learn something real from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from .. import _keys as K
from ..io.writer import SampleMeta, write_sample

REGIONS = ("tumour", "stroma", "immune", "adipose")
_REGION_BG = np.array([[228, 170, 205], [240, 160, 190], [225, 180, 215], [250, 245, 248]], dtype=np.float32)
_NUC_COLOUR = np.array([[80, 40, 120], [110, 60, 140], [45, 25, 95], [120, 70, 150]], dtype=np.float32)
_NUC_DENSITY = np.array([0.010, 0.0015, 0.022, 0.0006])  # nuclei per px²
_NUC_SIGMA = np.array([2.6, 1.6, 1.3, 1.5])
_ORGAN_TINT = {"Breast": (0, 0, 0), "Bowel": (-12, 6, -6), "Lung": (6, -8, 8), "Kidney": (-6, -6, 10)}


@dataclass
class SyntheticConfig:
    """Options of ``spade-st demo-data`` / :func:`synthetic`."""

    out: Path
    samples: int = 6
    spots: int = 300
    seed: int = 0
    genes: int = 300
    organs: tuple[str, ...] = ("Breast", "Bowel", "Lung")
    pixel_size_um: float = 1.0
    pitch_um: float = 100.0
    depth: float = 4000.0
    overwrite: bool = False
    extra: dict = field(default_factory=dict)


def _gene_names(n: int) -> list[str]:
    markers = [
        "EPCAM",
        "KRT8",
        "KRT18",
        "ERBB2",
        "MKI67",
        "COL1A1",
        "COL1A2",
        "DCN",
        "LUM",
        "ACTA2",
        "PTPRC",
        "CD3E",
        "CD74",
        "MS4A1",
        "CD68",
        "ADIPOQ",
        "PLIN1",
        "FABP4",
        "LEP",
        "CIDEA",
    ]
    return markers + [f"SYN{i:04d}" for i in range(n - len(markers))]


def _programs(rng: np.random.Generator, n_genes: int) -> np.ndarray:
    """(4, G) log-fold effects of each region; the named markers are planted explicitly."""
    prog = rng.normal(0, 0.35, size=(len(REGIONS), n_genes))
    for r, genes in enumerate([range(0, 5), range(5, 10), range(10, 15), range(15, 20)]):
        prog[r, list(genes)] += 3.0
    sparse = rng.random((len(REGIONS), n_genes)) < 0.15
    prog += sparse * rng.normal(0, 1.5, size=prog.shape)
    return prog


def _region_map(rng: np.random.Generator, h: int, w: int, px: float) -> np.ndarray:
    """Smooth random partition of the image into the four region types (int8 labels)."""
    scale = max(1, int(60 / px))
    fields = rng.normal(size=(len(REGIONS), h // scale + 2, w // scale + 2))
    fields = np.stack([ndimage.gaussian_filter(f, sigma=2.5) for f in fields])
    fields[0] += 0.15  # a little more tumour, as in a tumour section
    labels = np.zeros((h, w), np.int8)
    best = np.full((h, w), -np.inf, np.float32)
    for r, f in enumerate(fields):  # smooth (bilinear) boundaries, one field at a time to bound memory
        up = ndimage.zoom(f.astype(np.float32), scale, order=1)[:h, :w]
        labels[up > best] = r
        best = np.maximum(best, up)
    return labels


def _render(rng: np.random.Generator, region: np.ndarray, organ: str) -> np.ndarray:
    h, w = region.shape
    tint = np.array(_ORGAN_TINT.get(organ, (0, 0, 0)), np.float32)
    img = _REGION_BG[region] + tint
    fibre = ndimage.gaussian_filter(rng.normal(size=(h, w)), sigma=(1.0, 6.0))
    img += (region == 1)[..., None] * fibre[..., None] * np.array([-40, -30, -20], np.float32)
    img += rng.normal(0, 6, size=(h, w, 1)).astype(np.float32)
    vac = ndimage.gaussian_filter(rng.normal(size=(h, w)), sigma=6)
    septa = np.abs(vac) < 0.02
    img[(region == 3) & septa] = (215, 140, 180)
    nuclei = np.zeros((h, w), np.float32)
    for r in range(len(REGIONS)):
        pts = (rng.random((h, w)) < _NUC_DENSITY[r]) & (region == r)
        blob = ndimage.gaussian_filter(pts.astype(np.float32), sigma=_NUC_SIGMA[r])
        blob *= 2 * np.pi * _NUC_SIGMA[r] ** 2
        nuclei = np.maximum(nuclei, np.clip(blob * 1.6, 0, 1) * (region == r))
    nuc_col = _NUC_COLOUR[region]
    img = img * (1 - nuclei[..., None]) + nuc_col * nuclei[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def _spot_grid(n: int, pitch_px: float, margin: float) -> np.ndarray:
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    xs, ys = np.meshgrid(np.arange(cols), np.arange(rows))
    xy = np.stack([xs.ravel(), ys.ravel()], 1)[:n].astype(np.float64)
    xy[:, 0] += 0.5 * (xy[:, 1] % 2)  # Visium-like offset rows
    return margin + xy * pitch_px


def _region_fractions(region: np.ndarray, centers: np.ndarray, radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = (xx**2 + yy**2) <= radius**2
    out = np.zeros((len(centers), len(REGIONS)))
    for i, (cx, cy) in enumerate(np.round(centers).astype(int)):
        win = region[cy - r : cy + r + 1, cx - r : cx + r + 1][disc]
        out[i] = np.bincount(win, minlength=len(REGIONS)) / max(win.size, 1)
    return out


def synthetic(cfg: SyntheticConfig | None = None, progress: bool = True, **kwargs) -> Path:
    """Write the synthetic dataset into ``cfg.out`` (HEST layout) and return the root.

    The same ``seed`` gives byte-identical counts, coordinates and images.
    """
    import anndata as ad

    cfg = cfg or SyntheticConfig(**kwargs)
    if cfg.samples < 1 or cfg.spots < 1 or cfg.genes < 20:
        msg = f"synthetic data needs samples >= 1, spots >= 1 and genes >= 20, got {cfg.samples}, {cfg.spots}, {cfg.genes}"
        raise ValueError(msg)
    rng = np.random.default_rng(cfg.seed)
    genes = _gene_names(cfg.genes)
    prog = _programs(rng, cfg.genes)
    base = rng.normal(-1.0, 1.0, size=cfg.genes)
    organ_fx = {o: rng.normal(0, 0.4, size=cfg.genes) for o in cfg.organs}
    pitch = cfg.pitch_um / cfg.pixel_size_um
    margin = 150.0 / cfg.pixel_size_um
    for s in range(cfg.samples):
        srng = np.random.default_rng([cfg.seed, s])
        # pairs of sections from one patient (same organ), as in real cohorts; patients cycle through organs
        organ = cfg.organs[(s // 2) % len(cfg.organs)]
        patient = f"P{s // 2}"
        centers = _spot_grid(cfg.spots, pitch, margin)
        w = int(centers[:, 0].max() + margin) + 1
        h = int(centers[:, 1].max() + margin) + 1
        region = _region_map(srng, h, w, cfg.pixel_size_um)
        image = _render(srng, region, organ)
        frac = _region_fractions(region, centers, 27.5 / cfg.pixel_size_um)
        patient_fx = srng.normal(0, 0.2, size=cfg.genes)
        logmu = base + organ_fx[organ] + patient_fx + np.log(frac @ np.exp(prog) + 1e-6)
        mu = np.exp(logmu)
        mu /= mu.sum(1, keepdims=True)
        lib = cfg.depth * np.exp(srng.normal(0, 0.35, size=cfg.spots))
        mean = mu * lib[:, None]
        theta = 5.0  # NB dispersion
        counts = srng.poisson(srng.gamma(theta, mean / theta)).astype(np.int32)
        keep = np.ones(cfg.genes, bool)
        keep[20:] = srng.random(cfg.genes - 20) > 0.05  # a few genes missing per sample
        obs = pd.DataFrame(index=pd.Index([f"s{s}_spot{i:04d}" for i in range(cfg.spots)]))
        obs[K.LABEL] = pd.Categorical([REGIONS[i] for i in frac.argmax(1)], categories=list(REGIONS))
        for r, name in enumerate(REGIONS):
            obs[f"frac_{name}"] = frac[:, r]
        adata = ad.AnnData(X=counts[:, keep], obs=obs, var=pd.DataFrame(index=np.asarray(genes)[keep]))
        adata.obsm[K.SPATIAL] = centers
        meta = SampleMeta(
            organ=organ,
            patient=patient,
            st_technology="Visium",
            spot_diameter=55.0,
            inter_spot_dist=cfg.pitch_um,
            disease_state="Synthetic",
            dataset_title="spade-st synthetic",
        )
        write_sample(
            cfg.out,
            f"SYN{s:02d}",
            adata,
            image,
            cfg.pixel_size_um,
            meta,
            overwrite=cfg.overwrite,
            source={"generator": "spade_st.datasets.synthetic", "seed": cfg.seed, "index": s},
            progress=progress,
        )
    return Path(cfg.out)
