"""``spade-st pretrain``: split -> gene panel -> packed store -> two-stage clustering -> batched experts.

Every stage writes its result into the output folder and is reused on a rerun; training checkpoints after
every epoch, so a killed run continues from the last checkpoint and ends where an uninterrupted run ends
(bit-identical on CPU: each epoch's shuffles and dropout are seeded by (seed, epoch)).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import __version__
from .._atomic import atomic_path, atomic_write_json, atomic_write_text, plain
from .._dist import barrier, default_device, init_distributed
from .._validation import DataWarning, SpadeInputError
from ..experts.clustering import TwoStageClustering
from ..experts.model import SpadeConfig, SpadeModel
from ..io.runs import ModelLayout
from ._malloc import keep_freed_memory
from .config import PretrainConfig
from .loop import Trainer
from .projection import fit_expression_projection, fit_projection, rotation
from .splits import Split, make_split
from .store import RowSubset, build_store, open_store


def check_features_dir(features: Path) -> list[Path]:
    """The feature files of ``features``; a missing folder, or the parent FEATS folder, is a clear error."""
    features = Path(features)
    files = sorted(features.glob("*.h5"))
    if files:
        return files
    inner = sorted(d.name for d in features.glob("*/") if any(d.glob("*.h5"))) if features.is_dir() else []
    if inner:
        msg = (
            f"{features} holds one folder per encoder ({', '.join(inner)}), not feature files; "
            f"pass --features {features / inner[0]}"
        )
    else:
        msg = f"no feature files in {features}; run `spade-st extract` and pass --features FEATS/<encoder>"
    raise FileNotFoundError(msg)


def _infer_encoder(features: Path) -> str:
    from ..io.features import read_feature_attrs

    files = check_features_dir(features)
    return str(read_feature_attrs(files[0]).get("encoder") or features.name)


def prepare(cfg: PretrainConfig, samples=None):
    """Split, panel, store and clustering (rank 0 writes; reused when present). Returns the split and panel.

    ``samples``: the training candidates as :class:`~spade_st.io.HestSample` (default: every sample of
    ``cfg.data``); in-memory samples come from :func:`spade_st.tl.fit`.
    """
    from ..genes import GenePanel, build_panel
    from ..genes.intersection import hvg_within, intersect_genes
    from ..io import read_hest
    from .cohort import print_cohort, resolve_cohort

    out = cfg.out
    lay = ModelLayout(out)
    exclude, cohort, inter = cfg.exclude, None, None
    if samples is None:
        cohort = resolve_cohort(cfg)
        samples, exclude, inter = read_hest(cfg.data, ids=cohort.ids), cohort.exclude, cohort.intersection
    else:  # in-memory samples (tl.fit): no table to select from; the gene intersection over their var names
        samples = list(samples)
        if cfg.gene_intersection.min_genes > 0 or cfg.hvg_scope == "intersection":
            lists = {s.id: s.adata.var_names for s in samples if s.id not in set(exclude)}
            inter = intersect_genes(lists, cfg.gene_intersection.min_genes)
            samples = [s for s in samples if s.id in set(exclude) or s.id in set(inter.kept)]
    split_path = lay.split
    split = make_split(samples, cfg.val_fraction, cfg.seed, exclude, cfg.group_key)
    by_id = {s.id: s for s in samples}
    groups = {str(by_id[i].meta.get(cfg.group_key)) for i in split.train}
    k1, n_experts = cfg.clustering.k1, cfg.clustering.n_experts
    if k1 * len(groups) < n_experts:  # refused before anything is written
        msg = (
            f"k1 = {k1} stage-1 clusters x {len(groups)} group(s) ({cfg.group_key}) of training samples cannot "
            f"form {n_experts} experts; lower --experts or raise --k1"
        )
        raise SpadeInputError(msg)
    check_features_dir(cfg.features)
    if split_path.is_file() and json.loads(split_path.read_text()) != split.to_dict():
        msg = f"{split_path} holds a different split than these settings give; use a new --out"
        raise SpadeInputError(msg)
    within = hvg_within(inter, cfg.hvg_scope)
    panel_path = lay.panel
    old_panel = GenePanel.from_json(panel_path) if panel_path.is_file() else None
    if old_panel is not None and old_panel.within != len(within or ()):
        msg = (
            f"{panel_path} chose its HVGs among {old_panel.within or 'each sample’s own'} genes, these settings "
            f"among {len(within) if within else 'each sample’s own'}; use a new --out"
        )
        raise SpadeInputError(msg)
    out.mkdir(parents=True, exist_ok=True)
    if cohort is not None:
        print_cohort(cohort, cfg.progress)
        atomic_write_json(lay.cohort, cohort.to_dict())
    elif inter is not None and cfg.progress:
        print(inter.summary(), file=sys.stderr)
    atomic_write_json(lay.pretrain_config, cfg.to_dict() | {"version": __version__})
    atomic_write_json(split_path, split.to_dict())
    if cfg.progress:
        for group, reason in split.reasons.items():
            print(f"split [{group}]: {reason}", file=sys.stderr)
    if old_panel is not None:
        panel = old_panel
    else:
        panel = build_panel([by_id[i] for i in split.train], n_top=cfg.n_top_genes, mode=cfg.gene_mode, within=within)
    panel = panel.with_library_size(cfg.gene_library_size)
    panel.to_json(panel_path)
    used = [by_id[i] for i in split.train + split.val]
    store = build_store(
        used,
        cfg.features,
        panel,
        lay.store,
        cfg.encoder,
        cfg.group_key,
        cfg.store_dtype,
        progress=cfg.progress,
        smoothing=cfg.gene_smoothing,
    )
    panel.to_json(panel_path)  # now with the per-sample missing-gene counts
    cluster_store(cfg, store, split, split.block_barcodes(by_id))
    return split, panel


def split_rows(store, split: Split, block_barcodes: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Store rows that train and rows that validate: validation samples' rows plus, for the samples in
    ``split.val_blocks``, the rows of ``block_barcodes[sample]`` (their spatially blocked validation spots)."""
    block_barcodes = block_barcodes or {}
    missing = sorted(set(split.val_blocks) - set(block_barcodes))
    if missing:
        msg = f"the split validates on spatial blocks of {missing} but their validation barcodes were not given"
        raise SpadeInputError(msg)
    idx = store.index
    in_block = np.zeros(len(idx), bool)
    for sid, barcodes in block_barcodes.items():
        in_block |= (idx["sample"] == sid).to_numpy() & idx["barcode"].isin(list(map(str, barcodes))).to_numpy()
    tr = np.setdiff1d(store.rows_of(split.train), np.flatnonzero(in_block))
    va = np.union1d(store.rows_of(split.val), np.flatnonzero(in_block))
    return tr, va


def cluster_store(cfg: PretrainConfig, store, split: Split, block_barcodes: dict | None = None) -> None:
    """Two-stage clustering of the store's training rows into ``out/clustering.npz`` (reused when present).

    The features are read from the store group by group and in chunks (never all at once), so the memory
    this takes does not grow with the number of spots. ``block_barcodes``: see :func:`split_rows`.
    """
    clu_path = ModelLayout(cfg.out).clustering
    if clu_path.is_file():
        return
    tr, va = split_rows(store, split, block_barcodes)
    groups = store.index["group"].to_numpy()
    c = cfg.clustering
    sizing = cfg.optim.batch_size if c.min_expert_spots is None else c.min_expert_spots  # None: one batch
    clu = TwoStageClustering(**(plain(c) | {"min_expert_spots": sizing}), seed=cfg.seed, progress=cfg.progress)
    clu.fit(RowSubset(store.features, tr), groups[tr])
    if clu.sizing_ and cfg.progress:
        print(f"clustering: {clu.sizing_}", file=sys.stderr)
    val_exp = clu.predict(RowSubset(store.features, va)) if len(va) else np.zeros(0, int)
    qc = clu.qc_table(groups[tr])
    sample_of = store.index["sample"].to_numpy()[tr]
    for e in range(clu.n_experts_):
        mine = sample_of[clu.experts_ == e]
        if not len(mine):
            continue
        top, n = pd.Series(mine).value_counts().index[0], pd.Series(mine).value_counts().iloc[0]
        qc.loc[qc["expert"] == e, ["largest_sample", "largest_sample_share"]] = [str(top), n / len(mine)]
        if n / len(mine) > 0.9 and len(set(sample_of)) > 1:
            warnings.warn(
                f"expert {e}: {n / len(mine):.0%} of its {len(mine)} training spots come from sample {top}; it may "
                "tell that section apart (staining, scanner) rather than a tissue state. Check the UMAP by sample",
                DataWarning,
                stacklevel=2,
            )
    atomic_write_text(ModelLayout(cfg.out).clustering_qc, qc.to_csv(index=False))
    with atomic_path(clu_path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            centroids=clu.centroids_,
            centroid_expert=clu.centroid_expert_,
            centroid_group=clu.centroid_group_.astype(str),
            train_rows=tr,
            train_expert=clu.experts_,
            val_rows=va,
            val_expert=val_exp,
            sizing=np.array(clu.sizing_),
        )


def _expert_rows(clu, n_experts: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    tr = [clu["train_rows"][clu["train_expert"] == e] for e in range(n_experts)]
    va = [clu["val_rows"][clu["val_expert"] == e] for e in range(n_experts)]
    return tr, va


def pretrain(cfg: PretrainConfig, samples=None) -> Path:
    """Run (or resume) pretraining: :func:`prepare` on rank 0, then :func:`train`; returns ``cfg.out``.

    ``samples``: in-memory samples instead of reading ``cfg.data`` (see :func:`prepare`).
    """
    cfg = cfg.validate(require=("features", "out") if samples is not None else ("data", "features", "out"))
    cfg.encoder = cfg.encoder or _infer_encoder(cfg.features)
    info = init_distributed(cfg.device)
    if info.is_main:
        prepare(cfg, samples)
    barrier(info)
    return train(cfg, info, samples)


def train(cfg: PretrainConfig, info=None, samples=None) -> Path:
    """Train (or resume training) the experts of a prepared output folder; returns the model folder.

    ``cfg.out`` must hold what :func:`prepare` writes: ``split.json``, ``panel.json``, ``store/`` and
    ``clustering.npz``. The encoder name is taken from ``cfg.encoder`` or else from the store.
    """
    from ..genes import GenePanel

    cfg.validate(require=("out",))
    info = info if info is not None else init_distributed(cfg.device)
    device = torch.device(default_device(info, cfg.device))
    if device.type == "cpu":
        keep_freed_memory()
    lay = ModelLayout(cfg.out)
    missing = [p.name for p in lay.prepared if not p.exists()]
    if missing:
        msg = f"{cfg.out} is not a prepared pretraining folder (missing {missing}); run `spade-st pretrain` on it"
        raise SpadeInputError(msg)
    split = Split(**json.loads(lay.split.read_text()))
    panel = GenePanel.from_json(lay.panel)
    store = open_store(lay.store)
    cfg.encoder = cfg.encoder or store.encoder
    clu = dict(np.load(lay.clustering))
    E = int(clu["centroid_expert"].max()) + 1
    train_rows, val_rows = _expert_rows(clu, E)
    mcfg = SpadeConfig(
        **plain(cfg.model),
        encoder=cfg.encoder,
        feature_dim=int(store.features.shape[1]),
        genes=list(panel.genes),
        n_experts=E,
        k1=cfg.clustering.k1,
        gene_mode=cfg.gene_mode,
        group_key=cfg.group_key,
        split=split.to_dict(),
        train=cfg.training_key(),
    )
    torch.manual_seed(cfg.seed)
    model = SpadeModel(mcfg, clu["centroids"], clu["centroid_expert"]).to(device)
    g = torch.Generator().manual_seed(cfg.seed)
    model.image_heads.reset_parameters(g)
    model.gene_heads.reset_parameters(g)
    if mcfg.output != "spade":
        if mcfg.projection == "expression":
            samples_of = store.index["sample"].to_numpy()[clu["train_rows"]]
            mean, weight = fit_expression_projection(
                store.features, store.expression, clu["train_rows"], samples_of, mcfg.out_dim, mcfg.whiten
            )
        else:
            mean, weight = fit_projection(store.features, clu["train_rows"], mcfg.out_dim, mcfg.whiten)
        if mcfg.rotate:
            weight = (weight.astype(np.float64) @ rotation(mcfg.out_dim)).astype(np.float32)
        model.set_projection(mean, weight)
    if mcfg.output == "residual":  # the experts' part starts at 0: the untrained model is the projection
        with torch.no_grad():
            model.image_heads.ln_w.zero_()
            model.image_heads.ln_b.zero_()
    model.to(device)
    trainer = Trainer(
        model,
        cfg.optim,
        loss=mcfg.loss,
        tau=mcfg.tau,
        seed=cfg.seed,
        device=device,
        info=info,
        checkpoint_dir=lay.checkpoints,
        checkpoint_key=mcfg.train | {"genes": mcfg.genes, "E": E},
        progress=cfg.progress,
    ).fit(store.features, store.expression, train_rows, val_rows)
    state = trainer.state_
    if info.is_main:
        model.config.train = model.config.train | {
            "best_epoch": [int(x) for x in state["best_epoch"]],
            "best_val": [float(x) for x in state["best_val"]],
            "train_spots": [len(r) for r in train_rows],
            "val_spots": [len(r) for r in val_rows],
            "sizing": str(clu.get("sizing", "")),
            "world_size": info.world_size,
            "samples": plain(cfg.samples),
            "gene_intersection": plain(cfg.gene_intersection),
        }
        model.save_pretrained(cfg.out)
        atomic_write_text(lay.history, trainer.history_.to_csv(index=False))
        if cfg.predictor and (cfg.data is not None or samples is not None) and cfg.features is not None:
            from ..encoders.weights import sha256_file
            from ..io import read_hest
            from .predictor import fit_predictor_from_root

            by_id = {s.id: s for s in samples} if samples is not None else {s.id: s for s in read_hest(cfg.data)}
            head = fit_predictor_from_root(
                model,
                cfg.data,
                cfg.features,
                split.train,
                progress=cfg.progress,
                samples=list(by_id.values()),
                exclude=split.block_barcodes(by_id),
                model_sha256=sha256_file(lay.weights),
            )
            head.save(cfg.out)
    barrier(info)
    return cfg.out
