"""``spade-st report RUN_DIR``: one self-contained HTML page (images inline) and a markdown summary.

A run folder as ``spade-st demo`` writes it: ``data/`` (HEST root), ``features/<encoder>/``, ``model/``,
``embeddings/`` and ``results/*.csv``. Missing parts are skipped and listed; nothing is fetched from outside.
"""

from __future__ import annotations

import base64
import html
import json
import platform
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from .. import _keys as K
from .._atomic import atomic_write_text
from .._validation import SpadeInputError
from .._warnlog import read_warnings
from ..io.runs import ModelLayout, RunLayout

PACKAGES = ("torch", "numpy", "scanpy", "anndata", "timm", "faiss-cpu", "scikit-learn", "openslide-bin", "matplotlib")


def _versions() -> dict[str, str]:
    out = {"spade-st": __version__, "python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "not installed"
    return out


@dataclass
class ReportConfig:
    """Where ``spade-st report`` finds the run's parts (defaults: the folder names ``spade-st demo`` writes)."""

    run: Path
    data: Path | None = None  #: HEST root (default RUN/data)
    features: Path | None = None  #: FEATS/<encoder> (default RUN/features/<the model's encoder>)
    model: Path | None = None  #: model folder (default RUN/model)
    embeddings: Path | None = None  #: embeddings from `spade-st embed` (default RUN/embeddings)
    progress: bool = True

    def resolved(self) -> ReportConfig:
        run = RunLayout(self.run)
        return ReportConfig(
            run=run.root,
            data=Path(self.data) if self.data else run.data,
            features=Path(self.features) if self.features else None,
            model=Path(self.model) if self.model else run.model,
            embeddings=Path(self.embeddings) if self.embeddings else run.embeddings,
            progress=self.progress,
        )


def _spade_adata(samples, emb_dir: Path, feat_dir: Path | None):
    """All embedded spots as one AnnData (obsm X_spade, spade_expert_weights, raw features when all present)."""
    import anndata as ad

    from ..eval.gene_folds import load_section, rows_in_order
    from ..io.features import read_features

    parts = []
    for sid, smp in samples.items():
        f = emb_dir / f"{sid}.h5"
        if not f.is_file():
            continue
        e, sec = read_features(f), load_section(smp, f, targets=())  # sec: spots in the file's row order
        a = ad.AnnData(obs=pd.DataFrame(index=[f"{sid}:{b}" for b in sec.barcodes]))
        labels = sec.adata.obs["label"] if "label" in sec.adata.obs else None
        a.obs["label"] = labels.astype(str).to_numpy() if labels is not None else "unlabelled"
        a.obs["sample"], a.obs["organ"] = sid, smp.organ
        a.obsm["X_spade"] = e.features
        a.obsm["spade_expert_weights"] = e.arrays["expert_weights"]
        raw = feat_dir / f"{sid}.h5" if feat_dir is not None else None
        if raw is not None and raw.is_file():
            a.obsm["X_raw"] = rows_in_order(read_features(raw), sec.barcodes, f"features of {sid}")
        parts.append(a)
    return ad.concat(parts, merge="same") if parts else None


class _Said(dict):
    """Figures drawn ({title: path}) or parts skipped (``append``), each line printed when it happens."""

    def __init__(self, verb: str, progress: bool):
        super().__init__()
        self.verb, self.progress = verb, progress

    def __setitem__(self, title, path):
        super().__setitem__(title, path)
        if self.progress:
            print(f"report: {self.verb} {title}", file=sys.stderr, flush=True)

    def append(self, reason: str) -> None:
        self[reason] = None


def make_figures(cfg: ReportConfig, fig_dir: Path, shown: list[str] | None = None) -> tuple[dict[str, Path], list[str]]:
    """Draw every figure the run's files allow; returns ({title: png path}, [what was skipped and why]).
    ``shown`` (a list) gets the id of the section the tissue figures draw."""
    from ..experts.model import SpadeModel
    from ..io import read_hest
    from ..train.splits import held_out
    from . import embedding, gene_maps, routing_map
    from .curves import clustering_qc, fewshot_curves

    cfg = cfg.resolved()
    figs, skipped = _Said("drew", cfg.progress), _Said("skipped", cfg.progress)  # printed as they happen
    fig_dir.mkdir(parents=True, exist_ok=True)
    if not ModelLayout(cfg.model).config.is_file():
        skipped.append(f"every model figure: no model at {cfg.model} (pass --model)")
        return dict(figs), list(skipped)
    if not cfg.embeddings.is_dir():
        skipped.append(f"every embedding figure: no embeddings folder {cfg.embeddings} (pass --embeddings)")
        return dict(figs), list(skipped)
    if not cfg.data.is_dir():
        skipped.append(f"every tissue figure: no data root {cfg.data} (pass --data)")
        return dict(figs), list(skipped)
    model = SpadeModel.from_pretrained(cfg.model)
    split = model.config.split
    feat_dir = cfg.features or RunLayout(cfg.run).features(model.config.encoder)
    samples = {s.id: s for s in read_hest(cfg.data)}
    show = next((i for i in held_out(split) if (cfg.embeddings / f"{i}.h5").is_file()), split["train"][0])
    s = samples[show]
    if shown is not None:
        shown.append(show)
    with s.wsi() as slide:
        thumb = slide.get_thumbnail(900)
        scale = slide.dimensions[0] / thumb.shape[1]
    diameter = s.meta.get("spot_diameter")
    diameter = float(diameter) if diameter is not None and float(diameter) > 0 else K.VISIUM_SPOT_UM  # µm
    spot = diameter / s.pixel_size_um  # in level-0 px
    allspots = _spade_adata(samples, cfg.embeddings, feat_dir)
    one = allspots[allspots.obs["sample"] == show].copy()
    held = s.adata[[n.split(":", 1)[1] for n in one.obs_names]]  # the shown sample's spots, in embedding order
    one.obsm["spatial"] = np.asarray(held.obsm["spatial"])
    p = fig_dir / "routing_map.png"
    px = s.pixel_size_um  # level-0 µm/px: a scale bar on every tissue picture
    title = f"{show}: dominant expert (opacity = weight)"
    routing_map(one, img=thumb, scale=scale, spot_size=spot, title=title, save=p, pixel_size_um=px)
    figs["Routing map: dominant expert per spot"] = p
    from .embedding import island_note

    note = island_note(allspots, "X_spade", raw="X_raw")  # the embedding's number and the drawn UMAP's
    if "X_raw" not in allspots.obsm:
        skipped.append(f"raw-feature island number: no features for every sample in {feat_dir} (pass --features)")
    for key in ("expert", "sample", "organ", "label"):
        if key == "organ" and allspots.obs["organ"].nunique() < 2:
            skipped.append("UMAP by organ: one organ")
            continue
        if key == "label" and set(allspots.obs["label"]) <= {"unlabelled", "nan"}:
            skipped.append("UMAP by label: no sample has pathologist labels (obs['label'])")
            continue
        p = fig_dir / f"umap_{key}.png"
        title = f"SPADE embeddings by {key}" + (f"\n{note}" if key == "expert" else "")
        embedding(allspots, "X_spade", key, title=title, save=p)
        figs[f"UMAP coloured by {key}" + (f": {note}" if key == "expert" else "")] = p
    if model.predictor is None:
        skipped.append(f"measured vs predicted expression: {cfg.model} has no expression head (spade-st fit-predictor)")
    elif show in split.get("train", []):
        skipped.append("measured vs predicted expression: every embedded sample was a training sample")
    else:
        import anndata as ad

        pred = model.predictor.predict(one.obsm["X_spade"])  # rows of `held`, already read and barcode-matched
        from ..genes import expression_target

        trained = [samples[i].adata for i in split.get("train", []) if i in samples]
        var = np.concatenate([expression_target(a, model.predictor.genes) for a in trained]).var(0)
        top = [model.predictor.genes[j] for j in np.argsort(-var)[:3]]  # most variable in the training samples
        pa = ad.AnnData(pred[:, [model.predictor.genes.index(g) for g in top]])
        pa.obs_names, pa.var_names = held.obs_names, top
        pa.obsm["spatial"] = np.asarray(held.obsm["spatial"])
        p = fig_dir / "gene_maps.png"
        gene_maps(held, pa, top, img=thumb, scale=scale, spot_size=spot, save=p, pixel_size_um=px)
        figs[f"Measured vs predicted expression ({show}, held out; the model's expression head)"] = p
    qc_path, ck_path = ModelLayout(cfg.model).clustering_qc, ModelLayout(cfg.model).choose_k
    if qc_path.is_file():
        ck = pd.read_csv(ck_path) if ck_path.is_file() else None
        p = fig_dir / "clustering_qc.png"
        clustering_qc(ck, pd.read_csv(qc_path), save=p)
        figs["Clustering QC"] = p
    else:
        skipped.append(f"clustering QC: no {qc_path}")
    fs = RunLayout(cfg.run).results / "fewshot.csv"
    if fs.is_file():
        p = fig_dir / "fewshot_curves.png"
        fewshot_curves(pd.read_csv(fs), save=p, title="few-shot region classification (held-out samples)")
        figs["Few-shot curves (mean, 95% CI)"] = p
    else:
        skipped.append(f"few-shot curves: no {fs}")
    return dict(figs), list(skipped)


def _img_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _header(cfg: ReportConfig) -> list[str]:
    """What data the run used and how it was split, one line each."""
    from ..io.layout import read_metadata

    lines = []
    try:
        table = read_metadata(cfg.data)
        titles = sorted({str(t) for t in table.get("dataset_title", pd.Series(dtype=str)).dropna()})
        kind = "synthetic" if any("synthetic" in t.lower() for t in titles) else "real"
        lines.append(f"Data: {cfg.data} ({kind}; {len(table)} samples; {', '.join(titles) or 'no dataset title'})")
    except (FileNotFoundError, ValueError):
        lines.append(f"Data: {cfg.data} (not readable)")
    cfg_path = ModelLayout(cfg.model).config
    if cfg_path.is_file():
        split = json.loads(cfg_path.read_text()).get("split", {})
        lines.append(
            f"Split: trained on {', '.join(split.get('train', [])) or '-'}; validated on "
            f"{', '.join(split.get('val', [])) or '-'}; spatial validation blocks of "
            f"{', '.join(split.get('val_blocks', [])) or '-'}; excluded {', '.join(split.get('excluded', [])) or '-'}"
        )
    return lines


def write_report(run) -> Path:
    """Write ``RUN/report.html`` (self-contained) and ``RUN/report.md``; returns the HTML path.

    ``run``: the run folder, or a :class:`ReportConfig` naming where its parts are. What was drawn and what was
    skipped (and why) is printed and listed in the report.
    """
    cfg = (run if isinstance(run, ReportConfig) else ReportConfig(run=Path(run))).resolved()
    run = cfg.run
    if not run.is_dir():
        msg = f"run folder {run} does not exist"
        raise FileNotFoundError(msg)
    parts = {"model": ModelLayout(cfg.model).config, "embeddings": cfg.embeddings, "results": RunLayout(run).results}
    if not any(Path(p).exists() for p in parts.values()):
        msg = (
            f"{run} is not a run folder: it has none of {', '.join(f'{k} ({Path(v).name})' for k, v in parts.items())}; "
            "point at the --out of `spade-st run`/`demo`, or name the parts with --model/--embeddings"
        )
        raise SpadeInputError(msg)
    shown: list[str] = []
    figs, skipped = make_figures(cfg, run / "figures", shown)
    from .viewer import viewer_page

    viewers = {i: p for i in shown if (p := viewer_page(run / "view", i)) is not None}  # `spade-st view --out RUN/view`
    header = _header(cfg)
    results = RunLayout(run).results
    tables = {p.relative_to(run).as_posix(): pd.read_csv(p) for p in sorted(results.glob("*.csv"))}
    model_cfg = ModelLayout(cfg.model).config
    config = json.loads(model_cfg.read_text()) if model_cfg.is_file() else {}
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
        *[f"<p>{html.escape(h)}</p>" for h in header],
    ]
    md = ["# spade-st report", "", f"{run} · {when}", "", *[f"{h}  " for h in header], ""]
    said = [
        f"{w['stage']}: {w['message']}" + ("" if w["category"] == "DataWarning" else f" ({w['category']})")
        for w in read_warnings(run)
    ]  # what the run's stages warned about (RUN/warnings.json)
    parts += ["<h2>Warnings</h2>"] + (
        ["<ul>", *[f"<li>{html.escape(w)}</li>" for w in said], "</ul>"] if said else ["<p>no warnings recorded</p>"]
    )
    md += ["## Warnings", "", *([f"- {w}" for w in said] or ["no warnings recorded"]), ""]
    for title, p in figs.items():
        parts += [f"<h2>{html.escape(title)}</h2>", _img_tag(p)]
        md += [f"## {title}", "", f"![{title}]({p.relative_to(run).as_posix()})", ""]
        if title.startswith(("Routing map", "Measured vs predicted")):  # the shown section's tissue figures
            for sid, page in viewers.items():
                href = page.relative_to(run).as_posix()
                parts.append(f'<p><a href="{html.escape(href)}">open {html.escape(sid)} in the zoomable viewer</a></p>')
                md += [f"[open {sid} in the zoomable viewer]({href})", ""]
    for name, df in tables.items():
        parts += [f"<h2>Table: {html.escape(name)}</h2>", df.to_html(index=False, float_format=lambda v: f"{v:.3f}")]
        from ..eval.stats import to_markdown

        md += [f"## {name}", "", to_markdown(df), ""]
    if skipped:
        parts += ["<h2>Not drawn</h2><ul>", *[f"<li>{html.escape(t)}</li>" for t in skipped], "</ul>"]
        md += ["## Not drawn", "", *[f"- {t}" for t in skipped], ""]
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
