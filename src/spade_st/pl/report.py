"""``spade-st report RUN_DIR``: one self-contained HTML page (images inline) and a markdown summary.

A run folder as ``spade-st demo`` writes it: ``data/`` (HEST root), ``features/<encoder>/``, ``model/``,
``embeddings/`` and ``results/*.csv``. Missing parts are skipped and listed; nothing is fetched from outside.
"""

from __future__ import annotations

import base64
import html
import json
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from .._atomic import atomic_write_text

PACKAGES = ("torch", "numpy", "scanpy", "anndata", "timm", "faiss-cpu", "scikit-learn", "openslide-bin", "matplotlib")


def _versions() -> dict[str, str]:
    out = {"spade-st": __version__, "python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "not installed"
    return out


def make_figures(run: Path, fig_dir: Path) -> dict[str, Path]:
    """Draw every figure the run's files allow; returns {title: png path}."""
    from ..encoders.features import read_features
    from ..experts.model import SpadeModel
    from ..io import read_hest
    from ..train.splits import held_out
    from . import clustering_qc, fewshot_curves, gene_maps, routing_map, umap

    figs: dict[str, Path] = {}
    fig_dir.mkdir(parents=True, exist_ok=True)
    model_dir, emb_dir = run / "model", run / "embeddings"
    if not (model_dir / "config.json").is_file() or not emb_dir.is_dir():
        return figs
    model = SpadeModel.from_pretrained(model_dir)
    split = model.config.split
    samples = {s.id: s for s in read_hest(run / "data")}
    show = next((i for i in held_out(split) if (emb_dir / f"{i}.h5").is_file()), split["train"][0])
    s = samples[show]
    emb = read_features(emb_dir / f"{show}.h5")
    w = emb.arrays["expert_weights"]
    with s.wsi() as slide:
        thumb = slide.get_thumbnail(900)
        scale = slide.dimensions[0] / thumb.shape[1]
    from ..eval.gene_folds import load_section, rows_in_order

    held = load_section(s, emb_dir / f"{show}.h5", targets=())  # the sample's spots in embedding-file order
    xy = held.adata.obsm["spatial"] / scale
    spot_px = max(3.0, 55.0 / s.pixel_size_um / scale * 0.5)
    p = fig_dir / "routing_map.png"
    routing_map(thumb, xy, w, spot_px=spot_px, title=f"{show}: dominant expert (opacity = weight)", save=p)
    figs["Routing map: dominant expert per spot"] = p
    # UMAP of all SPADE embeddings
    z, raw, expert, organ, label, sample = [], [], [], [], [], []
    feat_dir = run / "features" / model.config.encoder
    for sid, smp in samples.items():
        f = emb_dir / f"{sid}.h5"
        if not f.is_file():
            continue
        e, sec = read_features(f), load_section(smp, f, targets=())  # sec: spots in the file's row order
        z.append(e.features)
        expert.append(e.arrays["expert_weights"].argmax(1))
        organ += [smp.organ] * len(e)
        sample += [sid] * len(e)
        label += list(sec.adata.obs["label"].astype(str)) if "label" in sec.adata.obs else ["NA"] * len(e)
        if raw is not None and (feat_dir / f"{sid}.h5").is_file():
            raw.append(rows_in_order(read_features(feat_dir / f"{sid}.h5"), sec.barcodes, f"features of {sid}"))
        else:
            raw = None
    z, expert = np.concatenate(z), np.concatenate(expert)
    from ..eval.islands import expert_islands
    from .embedding import umap_coords

    isl = expert_islands(z, expert)["silhouette_by_expert"]
    note = f"silhouette by expert {isl:.2f}"
    if raw is not None and len(np.concatenate(raw)) == len(z):
        note += f"; raw features {expert_islands(np.concatenate(raw), expert)['silhouette_by_expert']:.2f}"
    uc = umap_coords(z)
    for key, col in (("expert", expert), ("sample", sample), ("organ", organ), ("label", label)):
        if key == "organ" and len(set(organ)) < 2:
            continue  # one organ: nothing to colour
        p = fig_dir / f"umap_{key}.png"
        umap(
            z,
            [f"expert {c}" if key == "expert" else c for c in col],
            title=f"SPADE embeddings by {key}" + (f"\n({note})" if key == "expert" else ""),
            coords=uc,
            save=p,
        )
        figs[f"UMAP coloured by {key}" + (f" ({note})" if key == "expert" else "")] = p
    # measured vs predicted genes on the shown sample (ridge from SPADE embeddings, trained on train samples)
    panel = model.gene_panel()
    tr = [i for i in split.get("train", []) if (emb_dir / f"{i}.h5").is_file()]
    if tr and show not in tr:
        from sklearn.linear_model import RidgeCV

        secs = [load_section(samples[i], emb_dir / f"{i}.h5", targets=()) for i in tr]  # rows matched by barcode
        xtr = np.concatenate([sec.features for sec in secs])
        ytr = np.concatenate([panel.transform(sec.adata) for sec in secs])
        yte = panel.transform(held.adata)
        pred = RidgeCV(alphas=np.logspace(-1, 4, 11)).fit(xtr, ytr).predict(held.features)
        var = yte.var(0)
        top = list(np.argsort(-var)[:3])
        p = fig_dir / "gene_maps.png"
        gene_maps(thumb, xy, yte[:, top], pred[:, top], [panel.genes[j] for j in top], spot_px=spot_px, save=p)
        figs[f"Measured vs predicted expression ({show}, held out)"] = p
    qc_path = model_dir / "clustering_qc.csv"
    if qc_path.is_file():
        ck = pd.read_csv(model_dir / "choose_k.csv") if (model_dir / "choose_k.csv").is_file() else None
        p = fig_dir / "clustering_qc.png"
        clustering_qc(ck, pd.read_csv(qc_path), save=p)
        figs["Clustering QC"] = p
    fs = run / "results" / "fewshot.csv"
    if fs.is_file():
        p = fig_dir / "fewshot_curves.png"
        fewshot_curves(pd.read_csv(fs), save=p, title="few-shot region classification (held-out samples)")
        figs["Few-shot curves (mean, 95% CI)"] = p
    return figs


def _img_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def write_report(run: Path | str) -> Path:
    """Write ``RUN/report.html`` (self-contained) and ``RUN/report.md``; returns the HTML path."""
    run = Path(run)
    if not run.is_dir():
        msg = f"run folder {run} does not exist"
        raise FileNotFoundError(msg)
    figs = make_figures(run, run / "figures")
    tables = (
        {p.relative_to(run).as_posix(): pd.read_csv(p) for p in sorted((run / "results").glob("*.csv"))}
        if (run / "results").is_dir()
        else {}
    )
    config = (
        json.loads((run / "model" / "config.json").read_text()) if (run / "model" / "config.json").is_file() else {}
    )
    config.pop("genes", None)
    vers = _versions()
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>spade-st report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px}pre{background:#f6f6f6;padding:1em;overflow:auto}</style>",
        "</head><body>",
        f"<h1>spade-st report</h1><p>{html.escape(str(run))} &middot; {when}</p>",
    ]
    md = ["# spade-st report", "", f"{run} · {when}", ""]
    for title, p in figs.items():
        parts += [f"<h2>{html.escape(title)}</h2>", _img_tag(p)]
        md += [f"## {title}", "", f"![{title}]({p.relative_to(run).as_posix()})", ""]
    for name, df in tables.items():
        parts += [f"<h2>Table: {html.escape(name)}</h2>", df.to_html(index=False, float_format=lambda v: f"{v:.3f}")]
        from ..eval.stats import to_markdown

        md += [f"## {name}", "", to_markdown(df), ""]
    parts += [
        "<h2>Model configuration</h2>",
        f"<pre>{html.escape(json.dumps(config, indent=1))}</pre>",
        "<h2>Versions</h2>",
        f"<pre>{html.escape(json.dumps(vers, indent=1))}</pre>",
        "</body></html>",
    ]
    md += ["## Versions", "", *[f"- {k}: {v}" for k, v in vers.items()], ""]
    out = run / "report.html"
    atomic_write_text(out, "\n".join(parts))
    atomic_write_text(run / "report.md", "\n".join(md))
    return out
