"""``spade-st bench hest``: HEST-Benchmark on its own ``bench_data`` folder, with HEST's result files.

Per task, source and split (HEST's own ``splits/``): the training samples' rows and HEST's targets (log1p of the
stored counts of the task's gene list) go through HEST's probe (StandardScaler -> PCA(min(256, d), seed 1) ->
Ridge(lsqr, no intercept, alpha = 100 / (components x genes)), :func:`.genes.hest_ridge`); the score is the mean
over genes of the per-gene Pearson r on the pooled test rows; a task's score is the mean (std, ddof 0) over its
splits and the overall ``average`` the mean over tasks. Our cross-validated ridge (:func:`.genes.ridge_cv`,
alpha by leave-one-training-sample-out, spatial blocks for a lone training sample) is an extra column of our
tables only.

Sources: the raw features (extracted from the folder's patches with ``encoder``, or read from ``features``),
named by their encoder, and the embeddings of the same features by each SPADE model (``spade_<folder>``). A
model's cell over a split with a sample it trained on (:func:`.leakage.model_training_samples`) is refused, or
with ``allow_overlap`` scored and marked. Writes HEST's files (:mod:`.hest_files`) and ``results_long.csv``,
``results.csv``, ``results.md`` and ``bench_config.json``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from .._atomic import atomic_write_json, atomic_write_text, plain
from .._progress import progress as tqdm
from .._validation import SpadeInputError
from ..io.hest_bench import DEFAULT_GENE_LIST, BenchTask, check_task_samples, load_targets, read_bench_data
from .genes import hest_ridge, mean_pearson, ridge_cv
from .hest_files import split_results, write_dataset, write_split, write_task
from .leakage import model_training_samples, overlap
from .stats import long_table, summarise, to_markdown

PRECISIONS = ("fp32", "fp16", "bf16")  #: patch encoding precision on GPU (HEST's custom-encoder default: fp32)


@dataclass
class HestBenchConfig:
    """Options of ``spade-st bench hest``."""

    bench_data: Path
    out: Path
    tasks: list[str] | None = None  #: default: every task folder found
    encoder: str | None = None  #: extract features from the folder's patches with this encoder ...
    weights: Path | None = None
    features: Path | None = None  #: ... or read precomputed ``<sample>.h5`` (or ``<task>/<sample>.h5``)
    model: list[Path] = field(default_factory=list)  #: SPADE model folders whose embeddings are scored too
    allow_overlap: bool = False
    gene_list: str = DEFAULT_GENE_LIST
    latent_dim: int = 256  #: HEST's PCA components (min(latent_dim, d, training rows) are kept)
    seed: int = 1  #: HEST's seed (PCA, ridge)
    batch_size: int = 128  #: patches per encoder batch (HEST's chunk size)
    precision: str = "fp32"
    device: str | None = None
    progress: bool = True


@dataclass
class _Sample:
    x: np.ndarray
    barcodes: np.ndarray
    coords: np.ndarray
    y: np.ndarray | None = None


def _model_names(paths: list[Path]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base = f"spade_{Path(p).resolve().name}"
        name, i = base, 2
        while name in names:
            name, i = f"{base}_{i}", i + 1
        names.append(name)
    return names


def _feature_file(cfg: HestBenchConfig, task: str, sid: str) -> Path:
    for p in (Path(cfg.features) / task / f"{sid}.h5", Path(cfg.features) / f"{sid}.h5"):
        if p.is_file():
            return p
    msg = (
        f"task {task}: the features folder {cfg.features} has no {sid}.h5 (nor {task}/{sid}.h5); extract it "
        f"(spade-st extract) or pass --encoder E to extract from the bench_data patches"
    )
    raise SpadeInputError(msg)


def _check_options(cfg: HestBenchConfig) -> None:
    if cfg.device is not None:
        from .._dist import check_device

        check_device(cfg.device)
    if (cfg.encoder is None) == (cfg.features is None):
        msg = "bench hest needs exactly one of --encoder E (extract from the patches) or --features DIR"
        raise SpadeInputError(msg)
    if cfg.precision not in PRECISIONS:
        msg = f"unknown precision {cfg.precision!r}; choose from {PRECISIONS}"
        raise SpadeInputError(msg)


def _overlaps(cfg: HestBenchConfig, tasks: list[BenchTask], names: list[str]) -> dict:
    """(model name, task, split) -> {sample: 'train' | 'test'} for every sample of a split the model trained on;
    refused (one line) unless ``allow_overlap``."""
    found = {}
    for name, path in zip(names, cfg.model, strict=True):
        trained = model_training_samples(path)
        for t in tasks:
            for sp in t.splits:
                hit = overlap(trained, sp.train + sp.test)
                if hit:
                    found[name, t.name, sp.name] = {s: "test" if s in sp.test else "train" for s in hit}
    if found and not cfg.allow_overlap:
        (name, task, split), hit = next(iter(found.items()))
        shown = ", ".join(f"{s} ({side})" for s, side in hit.items())
        more = f" (and {len(found) - 1} more cell(s))" if len(found) > 1 else ""
        msg = (
            f"model {name} ({cfg.model[names.index(name)]}) trained on samples of task {task} {split}: {shown}{more}; "
            f"pretrain it with --exclude {' '.join(hit)}, or pass --allow-overlap to score it anyway (marked)"
        )
        raise SpadeInputError(msg)
    return found


class _Precision:
    """The encoder run in ``precision`` on GPU (fp32 on CPU, as HEST's autocast is off there)."""

    def __init__(self, encoder, precision: str):
        self.encoder, self.precision, self.embed_dim = encoder, precision, encoder.embed_dim

    def __call__(self, batch):
        import torch

        enc = self.encoder
        with torch.inference_mode():
            x = enc.preprocess(batch)
            if enc.device.type == "cuda" and self.precision != "fp32":
                dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
                with torch.autocast("cuda", dtype=dtype):
                    return enc.pool(enc.backbone(x)).float()
            return enc.pool(enc.backbone(x)).float()


def _extract(cfg: HestBenchConfig, tasks: list[BenchTask]) -> tuple[str, dict]:
    """Features of every sample of ``tasks`` from its patch file (cached under OUT/features/<encoder>/<task>/)."""
    from ..encoders.extract import PatchChunks, encode_batches
    from ..encoders.registry import create_encoder
    from ..io.features import FeatureSet, is_finished, read_features, write_features
    from ..io.hest import PatchFile

    encoder = create_encoder(cfg.encoder, weights=cfg.weights, device=cfg.device)
    run = _Precision(encoder, cfg.precision)
    expect = {"encoder": cfg.encoder, "weights_sha256": encoder.weights_sha256, "bench_precision": cfg.precision}
    todo, out = [], {}
    for t in tasks:
        for sid in t.sample_ids:
            path = Path(cfg.out) / "features" / cfg.encoder / t.name / f"{sid}.h5"
            n = len(PatchFile(t.samples[sid].patches))
            out[t.name, sid] = path
            if not is_finished(path, expect, n=n, dim=encoder.embed_dim):
                todo.append((t, sid, path, n))
    bar = tqdm(total=sum(n for *_, n in todo), unit="patch", desc=f"bench hest: extract {cfg.encoder}",
               disable=not cfg.progress or not todo, file=sys.stderr)  # fmt: skip
    for t, sid, path, n in todo:
        pf = PatchFile(t.samples[sid].patches)
        chunks = PatchChunks(pf.path, n, cfg.batch_size)
        feats = encode_batches(run, (chunks[i] for i in range(len(chunks))), n, bar)
        attrs = expect | {"sample_id": sid, "task": t.name, "spade_st_version": __version__}
        write_features(path, FeatureSet(feats, coords=pf.coords, barcode=pf.barcodes, attrs=attrs))
    bar.close()
    return cfg.encoder, {k: read_features(p) for k, p in out.items()}


def _read(cfg: HestBenchConfig, tasks: list[BenchTask]) -> tuple[str, dict]:
    from ..io.features import feature_encoder, read_features

    files = {(t.name, sid): _feature_file(cfg, t.name, sid) for t in tasks for sid in t.sample_ids}
    sets = {k: read_features(p) for k, p in files.items()}
    names = {feature_encoder(files[k], fs.attrs) or Path(cfg.features).name for k, fs in sets.items()}
    dims = {fs.features.shape[1] for fs in sets.values()}
    if len(names) > 1 or len(dims) > 1:
        msg = f"the features in {cfg.features} mix encoders {sorted(names)} / widths {sorted(dims)}; pass one encoder's"
        raise SpadeInputError(msg)
    return names.pop(), sets


def _samples(tasks: list[BenchTask], sets: dict) -> dict:
    from ..io.barcodes import match_barcodes
    from ..io.hest_bench import read_patch_index

    out = {}
    for t in tasks:
        for sid in t.sample_ids:
            fs = sets[t.name, sid]
            if fs.barcode is None:
                msg = f"the feature file of {sid} (task {t.name}) has no barcodes; re-extract it"
                raise SpadeInputError(msg)
            pb, pc = read_patch_index(t.samples[sid].patches)
            coords = pc[match_barcodes(fs.barcode, pb, f"features of {sid}", among="patches")] if len(pc) else None
            out[t.name, sid] = _Sample(np.asarray(fs.features), np.asarray(fs.barcode), coords)
        check_task_samples(t, {sid: out[t.name, sid].barcodes for sid in t.sample_ids})
    return out


def _models(cfg: HestBenchConfig, encoder: str, dim: int) -> list:
    from ..experts.model import SpadeModel

    models = []
    for p in cfg.model:
        m = SpadeModel.from_pretrained(p)
        if m.config.encoder != encoder or m.config.feature_dim != dim:
            msg = (
                f"model {p} embeds {m.config.feature_dim}-d {m.config.encoder} features, these are {dim}-d "
                f"{encoder}; pass that encoder's features (or --encoder {m.config.encoder})"
            )
            raise SpadeInputError(msg)
        models.append(m)
    return models


def run_hest_bench(cfg: HestBenchConfig) -> pd.DataFrame:
    """Run the benchmark (every input checked first); returns the table of ``results.md`` (one row per task and
    source: HEST's mean ± std over splits, our CV ridge, the overlap marks)."""
    _check_options(cfg)
    tasks = read_bench_data(cfg.bench_data, cfg.tasks, cfg.gene_list)
    names = _model_names(cfg.model)
    if cfg.features is not None:  # precomputed: every input can be checked before any work
        encoder, sets = _read(cfg, tasks)
        samples = _samples(tasks, sets)
        models = _models(cfg, encoder, next(iter(samples.values())).x.shape[1])
        marks = _overlaps(cfg, tasks, names)
    else:
        from ..encoders.registry import get_spec
        from ..io.hest_bench import read_patch_index

        for t in tasks:  # the targets' spots are the patches'
            check_task_samples(t, {s: read_patch_index(t.samples[s].patches)[0] for s in t.sample_ids})
        models = _models(cfg, cfg.encoder, get_spec(cfg.encoder).embed_dim)
        marks = _overlaps(cfg, tasks, names)
        encoder, sets = _extract(cfg, tasks)
        samples = _samples(tasks, sets)
    for (task, sid), s in samples.items():
        s.y = load_targets(next(t for t in tasks if t.name == task), sid, s.barcodes)
    sources = [(encoder, None, None), *[(n, m, p) for n, m, p in zip(names, models, cfg.model, strict=True)]]
    cells = [(t, src, sp) for t in tasks for src in sources for sp in t.splits]
    rows, kfold, emb = [], {}, {}
    bar = tqdm(cells, desc="bench hest: splits", unit="split", disable=not cfg.progress, file=sys.stderr)
    for t, (name, model, path), sp in bar:
        for s in sp.train + sp.test:
            if (name, t.name, s) not in emb:
                raw = samples[t.name, s].x
                emb[name, t.name, s] = raw if model is None else model.embed(raw)
        x = {s: emb[name, t.name, s] for s in sp.train + sp.test}
        mark = marks.get((name, t.name, sp.name), {})
        res, row = _score_split(cfg, t, sp, name, x, {s: samples[t.name, s] for s in sp.train + sp.test}, mark, path)
        kfold.setdefault((t.name, name), []).append(res)
        rows += row
    bar.close()
    task_res = {}
    for t in tasks:
        task_res[t.name] = {n: write_task(Path(cfg.out) / t.name / n, kfold[t.name, n]) for n, *_ in sources}
    average = write_dataset(Path(cfg.out), task_res)
    return _write_tables(cfg, encoder, names, long_table(rows), task_res, average, marks)


def _score_split(cfg, task: BenchTask, sp, name: str, x: dict, samples: dict, mark: dict, model_path) -> tuple:
    """HEST's probe (files written) and our CV ridge on one split; returns (HEST's results dict, long rows)."""
    from ..train.splits import spatial_blocks

    xtr, xte = np.concatenate([x[s] for s in sp.train]), np.concatenate([x[s] for s in sp.test])
    ytr, yte = (np.concatenate([samples[s].y for s in ids]) for ids in (sp.train, sp.test))
    k = min(cfg.latent_dim, xtr.shape[1], xtr.shape[0])
    pred = hest_ridge(xtr, ytr, xte, n_pca=k, seed=cfg.seed, as_hest=True)
    res = split_results(pred, yte, task.genes)
    if len(sp.train) > 1:
        groups = np.concatenate([np.full(len(samples[s].y), i) for i, s in enumerate(sp.train)])
    else:
        groups = spatial_blocks(samples[sp.train[0]].coords)
    cv = mean_pearson(ridge_cv(xtr, ytr, xte, groups)[0], yte)
    note = "" if k == cfg.latent_dim else f"PCA keeps min({cfg.latent_dim}, d={xtr.shape[1]}, n_train={len(xtr)}) = {k}"
    config = {
        "bench_data_root": str(cfg.bench_data), "datasets": [task.name], "encoders": [name], "gene_list": task.gene_list,
        "method": "ridge", "alpha": None, "normalize": True, "dimreduce": "PCA", "latent_dim": k,
        "latent_dim_requested": cfg.latent_dim, "latent_dim_note": note, "ridge_alpha": 100.0 / (k * len(task.genes)),
        "seed": cfg.seed, "batch_size": cfg.batch_size, "precision": cfg.precision, "results_dir": str(cfg.out),
        "exp_code": None, "overwrite": True, "train_samples": sp.train, "test_samples": sp.test,
        "source_model": str(model_path) if model_path else None, "overlap": mark,
        "constant_genes": [g["name"] for g in res["pearson_corrs"] if not np.isfinite(g["pearson_corr"])],
    } | _versions()  # fmt: skip
    dump = {"preds_all": pred, "targets_all": yte, "barcodes": np.concatenate([samples[s].barcodes for s in sp.test])}
    write_split(Path(cfg.out) / task.name / name / sp.name, res, len(ytr), len(yte), config, dump)
    marked = "; ".join(f"{s} ({side})" for s, side in mark.items())
    base = {"task": task.name, "source": name, "target": "log1p", "metric": "pearson_mean", "fold": sp.name}
    base |= {"overlap": marked, "pca_components": k, "n_train": len(ytr), "n_test": len(yte)}
    return res, [
        base | {"probe": "hest_ridge", "value": res["pearson_mean"]},
        base | {"probe": "ridge_cv", "value": cv},
    ]


def _versions() -> dict:
    import sklearn

    return {"sklearn_version": sklearn.__version__, "spade_st_version": __version__}


def _write_tables(cfg, encoder: str, names, long: pd.DataFrame, task_res: dict, average: dict, marks) -> pd.DataFrame:
    out = Path(cfg.out)
    atomic_write_text(out / "results_long.csv", long.to_csv(index=False))
    summary = summarise(long, ["task", "source", "probe"])
    atomic_write_text(out / "results.csv", summary.to_csv(index=False))
    atomic_write_json(out / "bench_config.json", plain(cfg) | {"encoder_name": encoder, "models": names} | _versions())
    cv = long[long.probe == "ridge_cv"].groupby(["task", "source"], sort=False)["value"].mean()
    table = []
    for task, res in task_res.items():
        for src, r in res.items():
            row = {
                "task": task,
                "source": src,
                "HEST ridge (mean ± std over splits)": f"{r['mean']:.4f} ± {r['std']:.4f}",
            }
            row["CV ridge"] = f"{cv[task, src]:.4f}"
            row["overlap"] = "; ".join(f"{sp}: {', '.join(f'{s} ({v})' for s, v in h.items())}"
                                       for (n, t, sp), h in marks.items() if n == src and t == task) or "–"  # fmt: skip
            table.append(row)
    avg = pd.DataFrame([{"source": k, "average (HEST)": v} for k, v in average.items()])
    text = f"# HEST-Benchmark ({cfg.bench_data})\n\n"
    text += f"Raw features: {encoder}. Target: log1p of the stored counts of each task's {cfg.gene_list}. "
    text += "HEST's probe: StandardScaler -> PCA -> Ridge (HEST's files beside this one); CV ridge: ours.\n\n"
    text += to_markdown(pd.DataFrame(table)) + "\n\n## Average over tasks (dataset_results.json)\n\n"
    text += to_markdown(avg, digits=4) + "\n"
    narrow = long[long.pca_components.astype(int) < cfg.latent_dim]
    if len(narrow):
        text += f"\nPCA kept fewer than {cfg.latent_dim} components (min(256, d, training rows)) for: "
        text += ", ".join(sorted(set(narrow.source))) + " (see each split's config.json).\n"
    if marks:
        text += "\n**In-sample cells (--allow-overlap):** these models trained on samples of the splits marked "
        text += "above; their numbers are not held-out scores.\n"
    for name, path in zip(names, cfg.model, strict=True):
        text += f"\n- {name}: SPADE model {path}"
    atomic_write_text(out / "results.md", text + "\n")
    return pd.DataFrame(table)
