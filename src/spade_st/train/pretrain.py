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
from .._atomic import atomic_path, atomic_write_json, atomic_write_text
from .._dist import barrier, default_device, init_distributed
from .._fault import maybe_die
from .._progress import progress as tqdm
from .._validation import DataWarning, SpadeInputError
from ..experts.clustering import TwoStageClustering
from ..experts.model import SpadeConfig, SpadeModel
from ..io.runs import ModelLayout
from ._malloc import keep_freed_memory
from .checkpoint import config_hash, load_checkpoint, save_checkpoint
from .config import PretrainConfig
from .loop import (
    ExpertBatches,
    allreduce_grads,
    expert_losses,
    prefetch,
    read_rows,
    step_mask,
    to_device,
    validation_losses,
)
from .optim import StackedAdamW, cosine_lr
from .projection import fit_projection
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
    from ..io import read_hest

    out = cfg.out
    samples = read_hest(cfg.data) if samples is None else list(samples)
    lay = ModelLayout(out)
    split_path = lay.split
    split = make_split(samples, cfg.val_fraction, cfg.seed, cfg.exclude, cfg.group_key)
    by_id = {s.id: s for s in samples}
    groups = {str(by_id[i].meta.get(cfg.group_key)) for i in split.train}
    if cfg.k1 * len(groups) < cfg.experts:  # refused before anything is written
        msg = (
            f"k1 = {cfg.k1} stage-1 clusters x {len(groups)} group(s) ({cfg.group_key}) of training samples cannot "
            f"form {cfg.experts} experts; lower --experts or raise --k1"
        )
        raise SpadeInputError(msg)
    check_features_dir(cfg.features)
    if split_path.is_file() and json.loads(split_path.read_text()) != split.to_dict():
        msg = f"{split_path} holds a different split than these settings give; use a new --out"
        raise SpadeInputError(msg)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(lay.pretrain_config, cfg.to_dict() | {"version": __version__})
    atomic_write_json(split_path, split.to_dict())
    if cfg.progress:
        for group, reason in split.reasons.items():
            print(f"split [{group}]: {reason}", file=sys.stderr)
    panel_path = lay.panel
    if panel_path.is_file():
        panel = GenePanel.from_json(panel_path)
    else:
        panel = build_panel([by_id[i] for i in split.train], n_top=cfg.n_top_genes, mode=cfg.gene_mode)
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
    clu = TwoStageClustering(
        k1=cfg.k1,
        n_experts=cfg.experts,
        small_group=cfg.small_group,
        empty_expert=cfg.empty_expert,
        backend=cfg.kmeans_backend,
        seed=cfg.seed,
        niter=cfg.kmeans_niter,
        nredo=cfg.kmeans_nredo,
        min_expert_spots=cfg.batch_size if cfg.min_expert_spots is None else cfg.min_expert_spots,
        progress=cfg.progress,
    )
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
        encoder=cfg.encoder,
        feature_dim=int(store.features.shape[1]),
        genes=list(panel.genes),
        n_experts=E,
        k1=cfg.k1,
        out_dim=cfg.out_dim,
        dropout=cfg.dropout,
        tau=cfg.tau,
        tau_r=cfg.tau_r,
        loss=cfg.loss,
        gene_mode=cfg.gene_mode,
        group_key=cfg.group_key,
        split=split.to_dict(),
        train=cfg.training_key(),
        output=cfg.output,
        shared_gene_head=cfg.shared_gene_head,
        recon_weight=cfg.recon_weight,
    )
    torch.manual_seed(cfg.seed)
    model = SpadeModel(mcfg, clu["centroids"], clu["centroid_expert"]).to(device)
    g = torch.Generator().manual_seed(cfg.seed)
    model.image_heads.reset_parameters(g)
    model.gene_heads.reset_parameters(g)
    if cfg.output != "spade":
        model.set_projection(*fit_projection(store.features, clu["train_rows"], cfg.out_dim, cfg.whiten))
    if cfg.output == "residual":  # the experts' part starts at 0: the untrained model is the projection
        with torch.no_grad():
            model.image_heads.ln_w.zero_()
            model.image_heads.ln_b.zero_()
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = StackedAdamW(params, E, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.batch_size % info.world_size:
        msg = f"batch size {cfg.batch_size} is not divisible by the {info.world_size} ranks"
        raise SpadeInputError(msg)
    batches = ExpertBatches(train_rows, cfg.batch_size, cfg.seed)
    total = torch.as_tensor(batches.steps * cfg.epochs)
    shared_total = torch.as_tensor([batches.n_steps * cfg.epochs])  # parameters shared by the experts
    ckpt_dir = lay.checkpoints
    chash = config_hash(mcfg.train | {"genes": mcfg.genes, "E": E})
    state = load_checkpoint(ckpt_dir, model, opt, chash)
    if state is not None and cfg.progress and info.is_main:
        print(
            f"pretrain: resuming from epoch {state['epoch']} of {cfg.epochs} ({ckpt_dir / 'last.safetensors'})",
            file=sys.stderr,
        )
    if state is None:
        state = {
            "epoch": 0,
            "history": [],
            "best_val": np.full(E, np.inf),
            "best_epoch": np.full(E, -1),
            "since_best": np.zeros(E, np.int64),
            "stopped": np.zeros(E, bool),
            "best_params": {k: v.detach().cpu().clone() for k, v in model.named_parameters()},
            "best_total": np.full(1, np.inf),
        }
    b_local = cfg.batch_size // info.world_size
    sl = slice(info.rank * b_local, (info.rank + 1) * b_local)
    bar = tqdm(
        range(state["epoch"], cfg.epochs),
        desc="pretrain",
        unit="epoch",
        disable=not cfg.progress or not info.is_main,
        initial=state["epoch"],
        total=cfg.epochs,
    )
    for epoch in bar:
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout masks: a function of (seed, epoch) only
        model.train()
        run_loss, run_n = np.zeros(E), np.zeros(E)

        stopped = state["stopped"].copy()  # fixed within an epoch

        def load(b, stopped=stopped):
            _, idx, _, active = b
            act = np.flatnonzero(active & ~stopped)  # only the experts that train at this step are read and run
            return act, read_rows(store.features, idx[act][:, sl]), read_rows(store.expression, idx[act][:, sl])

        steps = tqdm(
            prefetch(batches.epoch(epoch), load),
            total=batches.n_steps,
            desc=f"epoch {epoch}",
            unit="step",
            leave=False,
            disable=not cfg.progress or not info.is_main,
        )
        for (step, _, mask, _), (act, feats, genes) in steps:
            maybe_die(f"epoch{epoch}-step{step}")
            if not len(act):
                continue
            feats, genes = to_device(feats, device), to_device(genes, device)
            active = np.zeros(E, bool)
            active[act] = True
            sub = None if len(act) == E else torch.from_numpy(act).to(device)
            m = step_mask(mask[act], device, sl)
            opt.zero_grad()
            per = expert_losses(model, feats, genes, m, cfg.loss, cfg.tau, info, experts=sub)
            per.sum().backward()
            allreduce_grads(params, info, replicated=[model.logit_scale] if cfg.loss == "infonce" else ())
            lr = cosine_lr(cfg.lr, opt.steps, total)
            opt.step(lr, torch.from_numpy(active), float(cosine_lr(cfg.lr, opt.shared_steps, shared_total)[0]))
            run_loss[act] += per.detach().cpu().numpy()
            run_n[act] += 1
        with np.errstate(invalid="ignore"):
            tr_loss = run_loss / np.maximum(run_n, 1)
        val = validation_losses(model, store, val_rows, cfg.batch_size, cfg.loss, cfg.tau, device)
        score = np.where(np.isnan(val), tr_loss, val)  # an expert without validation spots keeps its last epoch
        improved = (score < state["best_val"]) & ~state["stopped"]
        total_improved = bool(score.sum() < state["best_total"][0])  # shared parameters: the experts' summed loss
        state["best_total"] = np.minimum(state["best_total"], score.sum())
        for k, v in model.named_parameters():
            best = state["best_params"][k]
            if v.shape[0] != E:  # shared by every expert
                if total_improved:
                    best.copy_(v.detach().cpu())
                continue
            best[torch.from_numpy(improved)] = v.detach().cpu()[torch.from_numpy(improved)]
        state["best_val"] = np.where(improved, score, state["best_val"])
        state["best_epoch"] = np.where(improved, epoch, state["best_epoch"])
        state["since_best"] = np.where(improved, 0, state["since_best"] + 1)
        if cfg.early_stop is not None:
            state["stopped"] = state["stopped"] | (state["since_best"] >= cfg.early_stop)
        state["history"] += [
            {
                "epoch": epoch,
                "expert": e,
                "train_loss": float(tr_loss[e]),
                "val_loss": float(val[e]),
                "lr": float(cosine_lr(cfg.lr, opt.steps, total)[e]),
            }
            for e in range(E)
        ]
        state["epoch"] = epoch + 1
        if info.is_main:
            save_checkpoint(ckpt_dir, model, opt, state, chash)
            kind, shown = ("val", val) if not np.isnan(val).all() else ("train", tr_loss)
            bar.set_postfix_str(
                f"{kind} loss per expert: mean {np.nanmean(shown):.2f}, min {np.nanmin(shown):.2f}, "
                f"max {np.nanmax(shown):.2f}"
            )
        barrier(info)
    bar.close()
    if info.is_main:
        with torch.no_grad():
            for k, v in model.named_parameters():
                v.copy_(state["best_params"][k].to(v.device))
        model.config.train = model.config.train | {
            "best_epoch": [int(x) for x in state["best_epoch"]],
            "best_val": [float(x) for x in state["best_val"]],
            "train_spots": [len(r) for r in train_rows],
            "val_spots": [len(r) for r in val_rows],
            "sizing": str(clu.get("sizing", "")),
            "world_size": info.world_size,
        }
        model.save_pretrained(cfg.out)
        atomic_write_text(lay.history, pd.DataFrame(state["history"]).to_csv(index=False))
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
