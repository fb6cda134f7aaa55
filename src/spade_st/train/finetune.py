"""``spade-st finetune``: train part of a patch encoder against spot expression; write an encoder folder.

The split is ``pretrain``'s (:func:`~spade_st.train.splits.make_split`, same options), the gene panel is built
on its training samples, and the objective is BLEEP's (:func:`~spade_st.experts.loss.bleep_loss`; or
``loss: infonce``, CLIP's) between the encoder's features through an image projection head and the panel
expression through a gene head (SPADE's heads, one expert), optionally plus a linear reconstruction of the
expression from the image embedding.

What trains: the last ``train_blocks`` blocks of a CNN (the frozen prefix computed once per dihedral view
and memory-mapped, so an epoch runs only the trained blocks), or LoRA adapters on a ViT's projections (the
whole network each epoch; colour jitter possible). Batch norms keep their running statistics (the backbone
stays in eval mode), so the cached prefix is exactly what the whole network computes. Each epoch's order,
views and dropout are seeded by (seed, epoch) and a checkpoint is written after every epoch: a killed run
resumes where it stopped and ends with the same bytes. The best epoch on the split's validation spots is kept
(early stopping with ``early_stop`` epochs of patience).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import __version__
from .._atomic import atomic_save_safetensors, atomic_write_json, atomic_write_text
from .._progress import progress as tqdm
from ..encoders.finetuned import CONFIG, KIND, WEIGHTS
from ..experts.heads import StackedHeads
from ..experts.loss import INFONCE_INIT_TEMPERATURE, bleep_loss, infonce_loss
from .checkpoint import config_hash
from .finetune_config import FinetuneConfig
from .finetune_data import (
    VIEW_SETS,
    PatchReader,
    build_spots,
    cache_key,
    dihedral,
    gather_cached,
    permutation_within,
    prefix_cache,
)
from .finetune_state import load_state, save_state

HISTORY = "history.csv"


class Objective(nn.Module):
    """Image head, gene head (SPADE's projection heads, one expert each), the contrastive loss between them
    (BLEEP, or InfoNCE with a learnable temperature) and an optional expression decoder."""

    def __init__(self, feat_dim: int, n_genes: int, cfg: FinetuneConfig, generator: torch.Generator):
        super().__init__()
        self.image = StackedHeads(1, feat_dim, cfg.out_dim, cfg.dropout)
        self.gene = StackedHeads(1, n_genes, cfg.out_dim, cfg.dropout)
        self.image.reset_parameters(generator)
        self.gene.reset_parameters(generator)
        self.tau, self.recon_weight, self.loss = cfg.tau, cfg.recon_weight, cfg.loss
        if cfg.loss == "infonce":  # CLIP's learnable temperature
            self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / INFONCE_INIT_TEMPERATURE))))
        self.decoder = nn.Linear(cfg.out_dim, n_genes) if cfg.recon_weight > 0 else None
        if self.decoder is not None:
            with torch.no_grad():
                self.decoder.weight.uniform_(-(cfg.out_dim**-0.5), cfg.out_dim**-0.5, generator=generator)
                self.decoder.bias.zero_()

    def forward(self, feats: torch.Tensor, expr: torch.Tensor) -> torch.Tensor:
        z, s = self.image(feats[None]), self.gene(expr[None])
        if self.loss == "infonce":
            loss = infonce_loss(z, s, self.logit_scale).mean()
        else:
            loss = bleep_loss(z, s, self.tau).mean()
        if self.decoder is not None:
            loss = loss + self.recon_weight * nn.functional.mse_loss(self.decoder(z[0]), expr)
        return loss


class _Net:
    """The encoder being trained: its trainable parameters and features of spot rows (cached or whole)."""

    def __init__(self, cfg: FinetuneConfig, device: torch.device):
        from ..encoders import create_encoder
        from ..encoders.lora import apply_lora, lora_parameters
        from ..encoders.partial import SplitNet

        self.cfg, self.method = cfg, cfg.resolved_method()
        self.enc = create_encoder(cfg.encoder, weights=cfg.weights, device=device, **cfg.arch)
        self.base_sha = self.enc.weights_sha256
        pool = self.enc.pool if self.enc.spec.pool is not None else None
        if self.method == "blocks":
            self.split = SplitNet(cfg.encoder, self.enc.backbone, cfg.train_blocks, pool)
            self.params = self.split.trained_parameters()
            self.trained = {"blocks": self.split.trained_names, "cut": self.split.cut}
        else:
            names = apply_lora(self.enc.backbone, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, cfg.seed)
            self.enc.to(device)
            self.params = lora_parameters(self.enc.backbone)
            self.trained = {"lora_layers": names, "rank": cfg.lora_rank, "alpha": cfg.lora_alpha}
        for p in self.params.values():
            p.requires_grad_(True)
        self.trained["parameters"] = int(sum(p.numel() for p in self.params.values()))
        self.enc.eval()
        self.cached = self.method == "blocks" and cfg.cache_prefix
        self.cache = None

    def prepare(self, spots, progress: bool) -> None:
        self.spots, self.reader = spots, PatchReader(spots)
        if self.cached:
            key = cache_key(
                {"encoder": self.cfg.encoder, "weights": self.base_sha, "arch": self.cfg.arch}
                | {"cut": self.split.cut, "views": self.cfg.views}
            )
            root = Path(self.cfg.cache_dir) if self.cfg.cache_dir is not None else Path(self.cfg.out) / "cache"
            self.cache = prefix_cache(self.split, self.enc.preprocess, spots, self.cfg.views, root / key, 16, progress)

    def features(self, rows: np.ndarray, view_idx: np.ndarray, gen: np.random.Generator | None) -> torch.Tensor:
        """Trainable features of ``rows`` in views ``view_idx`` (positions in :data:`VIEW_SETS`)."""
        if self.cached:
            return self.split.suffix(gather_cached(self.cache, self.spots, rows, view_idx).to(self.enc.device))
        img = self.reader(rows)
        vs = VIEW_SETS[self.cfg.views]
        for v in np.unique(view_idx):
            img[view_idx == v] = dihedral(img[view_idx == v], vs[v])
        if self.cfg.jitter > 0 and gen is not None:
            img = _jitter(img, self.cfg.jitter, gen)
        x = self.enc.preprocess(img)
        if self.method == "blocks":
            with torch.no_grad():
                h = self.split.prefix(x)
            return self.split.suffix(h)
        out = self.enc.backbone(x)
        return self.enc.pool(out)


def _jitter(img: np.ndarray, j: float, gen: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation factors drawn in [1 - j, 1 + j] per patch (uint8 in, uint8 out)."""
    x = img.astype(np.float32)
    b, c, s = (gen.uniform(1 - j, 1 + j, size=(len(x), 1, 1, 1)).astype(np.float32) for _ in range(3))
    x = x * b
    x = (x - x.mean((1, 2, 3), keepdims=True)) * c + x.mean((1, 2, 3), keepdims=True)
    grey = x.mean(-1, keepdims=True)
    x = (x - grey) * s + grey
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _batches(rows: np.ndarray, size: int) -> list[np.ndarray]:
    """Consecutive batches of ``rows``; a last batch of one row joins the one before (BLEEP needs two)."""
    out = [rows[i : i + size] for i in range(0, len(rows), size)]
    if len(out) > 1 and len(out[-1]) < 2:
        out[-2] = np.concatenate([out[-2], out.pop()])
    return out


def swapped_rows(rows: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """``rows`` reordered among the rows of the same section (``labels``: one section id per row of the
    spots): the expression rows the pairing gap gives a batch's images. The batch keeps its set of expression
    rows and each image gets a spot of its own section; only the pairing changes."""
    return rows[permutation_within(labels[rows], seed)]


def _val_loss(net: _Net, obj: Objective, spots, batch_size: int, seed: int) -> tuple[float, float]:
    """Validation loss, and the same loss with the expression of each batch re-paired within its sections.

    The second gives every image of a batch the expression of another spot of the same batch and section
    (:func:`swapped_rows`; one fixed random permutation, so about one spot per section and batch keeps its
    own). It is what the loss reaches when expression says nothing about where in the section a patch lies:
    its excess over the first (the pairing gap) is the part of the validation loss that spot-level
    image-expression pairing explains, which the permuted control cannot learn. The batch's images and its set
    of expression rows are unchanged, and differences between sections (stain, depth) stay paired and do not
    count. BLEEP's soft targets also reward structure within each side alone, so the loss can fall while the
    gap stays at zero.
    """
    obj.eval()
    total, shuffled, n = 0.0, 0.0, 0
    labels = np.asarray(spots.sample_ids)[spots.section]
    with torch.no_grad():
        for rows in _batches(spots.val, batch_size):
            if len(rows) < 2:
                continue
            feats = net.features(rows, np.zeros(len(rows), np.int64), None)
            expr = torch.from_numpy(spots.expression[rows]).to(net.enc.device)
            swap = torch.from_numpy(spots.expression[swapped_rows(rows, labels, seed + 7)]).to(net.enc.device)
            total += float(obj(feats, expr)) * len(rows)
            shuffled += float(obj(feats, swap)) * len(rows)
            n += len(rows)
    return (total / n, shuffled / n) if n else (float("nan"), float("nan"))


def cohort_config(cfg: FinetuneConfig):
    """The pretraining config whose cohort (sample rules, ``exclude``, gene intersection, HVG scope) is ``cfg``'s."""
    from .config import PretrainConfig

    return PretrainConfig(
        data=cfg.data, samples=cfg.samples, exclude=list(cfg.exclude), gene_intersection=cfg.gene_intersection,
        hvg_scope=cfg.hvg_scope,
    )  # fmt: skip


def _setup(cfg: FinetuneConfig):
    """Samples, split, panel and spots of ``cfg`` (the samples and split exactly as ``pretrain`` makes them)."""
    from ..genes import build_panel
    from ..genes.intersection import hvg_within
    from ..io import read_hest
    from .cohort import print_cohort, resolve_cohort
    from .splits import make_split

    cohort = resolve_cohort(cohort_config(cfg))
    print_cohort(cohort, cfg.progress)
    samples = read_hest(cfg.data, cohort.ids)
    split = make_split(samples, cfg.val_fraction, cfg.seed, cohort.exclude, cfg.group_key)
    by_id = {s.id: s for s in samples}
    within = hvg_within(cohort.intersection, cfg.hvg_scope)
    panel = build_panel([by_id[i] for i in split.train], n_top=cfg.n_top_genes, within=within)
    spots = build_spots(samples, split, panel, permute=cfg.permute_expression, seed=cfg.seed)
    return split, panel, spots


def finetune(cfg: FinetuneConfig) -> Path:
    """Fine-tune ``cfg.encoder`` and write the encoder folder ``cfg.out`` (resumed or reused when there).

    Returns ``cfg.out``; ``extract --encoder finetuned:OUT`` and ``create_encoder("finetuned:OUT")`` use it.
    """
    cfg = cfg.validate()
    out = Path(cfg.out)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    split, panel, spots = _setup(cfg)
    if len(spots.train) < 2:
        msg = f"the split leaves {len(spots.train)} training spot(s); fine-tuning needs a batch: add samples"
        raise ValueError(msg)
    net = _Net(cfg, device)
    key = config_hash(cfg.record() | {"base_weights_sha256": net.base_sha, "split": split.to_dict()})
    if (out / CONFIG).is_file() and json.loads((out / CONFIG).read_text()).get("config_hash") == key:
        if cfg.progress:
            print(f"finetune: {out} is finished with these settings; reused", file=sys.stderr)
        return out
    out.mkdir(parents=True, exist_ok=True)
    net.prepare(spots, cfg.progress)
    torch.manual_seed(cfg.seed)
    with torch.no_grad():
        feat_dim = int(net.features(spots.train[:2], np.zeros(2, np.int64), None).shape[1])
    obj = Objective(feat_dim, len(panel), cfg, torch.Generator().manual_seed(cfg.seed)).to(device)
    groups = [
        {"params": list(net.params.values()), "lr": cfg.encoder_lr},
        {"params": list(obj.parameters()), "lr": cfg.lr},
    ]
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    state = load_state(out, net.params, obj, opt, key) or {
        "epoch": 0, "history": [], "best_val": float("inf"), "best_epoch": -1, "since_best": 0,
        "best": {k: p.detach().clone() for k, p in net.params.items()},
    }  # fmt: skip
    n_views = len(VIEW_SETS[cfg.views])
    bar = tqdm(total=cfg.epochs, initial=state["epoch"], unit="epoch", desc="finetune", disable=not cfg.progress)
    while state["epoch"] < cfg.epochs and not (cfg.early_stop and state["since_best"] >= cfg.early_stop):
        epoch = state["epoch"]
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 100003 + epoch)  # the heads' dropout
        order = spots.train[rng.permutation(len(spots.train))]
        views = rng.integers(0, n_views, size=len(order))
        obj.train()
        total = 0.0
        for rows, vi in zip(_batches(order, cfg.batch_size), _batches(views, cfg.batch_size), strict=True):
            expr = torch.from_numpy(spots.expression[rows]).to(device)
            loss = obj(net.features(rows, vi, rng), expr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
        val, val_shuffled = _val_loss(net, obj, spots, cfg.batch_size, cfg.seed)
        better = bool(np.isfinite(val) and val < state["best_val"]) or not len(spots.val)
        if better:
            state |= {"best_val": val, "best_epoch": epoch, "since_best": 0}
            state["best"] = {k: p.detach().clone() for k, p in net.params.items()}
        else:
            state["since_best"] += 1
        state["history"].append(
            {
                "epoch": epoch, "train_loss": total / len(order), "val_loss": val,
                "val_loss_shuffled": val_shuffled, "val_pairing_gap": val_shuffled - val,
            }
        )  # fmt: skip
        state["epoch"] = epoch + 1
        save_state(out, net.params, obj, opt, state, key)
        last = state["history"][-1]
        bar.set_postfix(
            train=f"{last['train_loss']:.4f}", val=f"{val:.4f}", gap=f"{last['val_pairing_gap']:.4f}", refresh=False
        )
        bar.update(1)
    bar.close()
    return _write_folder(cfg, net, split, panel, spots, state, key, feat_dim)


def _best_gap(state: dict) -> float | None:
    """The validation pairing gap of the kept epoch (None without validation spots)."""
    rows = [h for h in state["history"] if h["epoch"] == state["best_epoch"]]
    gap = rows[0].get("val_pairing_gap") if rows else None
    return float(gap) if gap is not None and np.isfinite(gap) else None


def _write_folder(cfg, net: _Net, split, panel, spots, state: dict, key: str, feat_dim: int) -> Path:
    """The best epoch's encoder as ``model.safetensors`` (whole backbone) + ``config.json`` + ``history.csv``."""
    import pandas as pd

    from ..encoders.lora import merge_lora
    from ..encoders.weights import sha256_file

    out = Path(cfg.out)
    with torch.no_grad():
        for k, p in net.params.items():
            p.copy_(state["best"][k])
    backbone = merge_lora(net.enc.backbone) if net.method == "lora" else net.enc.backbone
    sd = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    atomic_save_safetensors(out / WEIGHTS, sd, {"format": "pt"})
    sha = sha256_file(out / WEIGHTS)
    record = cfg.record()
    atomic_write_json(
        out / CONFIG,
        {
            "kind": KIND,
            "name": f"{cfg.encoder}-ft-{sha[:8]}",
            "base_encoder": cfg.encoder,
            "base_weights": str(net.enc.weights_path) if net.enc.weights_path else None,
            "base_weights_sha256": net.base_sha,
            "arch": cfg.arch,
            "embed_dim": feat_dim,
            "method": net.method,
            "trained": net.trained,
            "config": record,
            "config_hash": key,
            "seed": cfg.seed,
            "permuted_expression": cfg.permute_expression,
            "split": split.to_dict(),
            "genes": list(panel.genes),
            "spots": {"train": len(spots.train), "val": len(spots.val)},
            "best_epoch": int(state["best_epoch"]),
            "best_val": float(state["best_val"]) if np.isfinite(state["best_val"]) else None,
            "best_val_pairing_gap": _best_gap(state),
            "epochs_run": int(state["epoch"]),
            "weights_sha256": sha,
            "spade_st_version": __version__,
        },
    )
    atomic_write_text(out / HISTORY, pd.DataFrame(state["history"]).to_csv(index=False))
    return out
