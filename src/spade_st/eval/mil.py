"""Slide-level models on bags of patch embeddings: gated ABMIL and a mean-pooled linear probe.

ABMIL (as in SPADE's downstream code): Linear(in, 512) -> ReLU -> Linear(512, 512) -> ReLU, gated attention
of width 384 (tanh · sigmoid), attention-pooled slide vector -> Linear(512, C); Xavier initialisation, no
dropout. Protocol: stratified k-fold CV on the development slides (best epoch by validation), held-out test
slides scored by the mean probability of the fold models; class-balanced sampling; AdamW + cosine; one bag per
step.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from torch import nn


class GatedABMIL(nn.Module):
    """Gated attention MIL (Ilse et al. 2018) with SPADE's widths."""

    def __init__(self, in_dim: int, n_out: int, hidden: int = 512, attn: int = 384):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.attn_v = nn.Linear(hidden, attn)
        self.attn_u = nn.Linear(hidden, attn)
        self.attn_w = nn.Linear(attn, 1)
        self.head = nn.Linear(hidden, n_out)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, bag: torch.Tensor, return_attention: bool = False):
        h = self.fc(bag)  # (n, hidden)
        a = self.attn_w(torch.tanh(self.attn_v(h)) * torch.sigmoid(self.attn_u(h))).squeeze(-1)
        w = torch.softmax(a, dim=0)
        out = self.head(w @ h)
        return (out, w) if return_attention else out


@dataclass
class MILConfig:
    epochs: int = 20
    lr: float = 1e-4
    weight_decay: float = 1e-2
    folds: int = 5
    hidden: int = 512
    attn: int = 384
    seed: int = 0


def _balanced_order(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One epoch of indices drawn with probability inverse to class frequency (class-balanced sampling)."""
    counts = {c: np.sum(y == c) for c in np.unique(y)}
    p = np.array([1.0 / counts[c] for c in y])
    return rng.choice(len(y), size=len(y), replace=True, p=p / p.sum())


def _train_one(bags, y, tr, va, n_classes, cfg: MILConfig, seed: int) -> GatedABMIL:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = GatedABMIL(bags[0].shape[1], n_classes, cfg.hidden, cfg.attn)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * len(tr))
    best, best_state = -np.inf, None
    for _ in range(cfg.epochs):
        model.train()
        for i in tr[_balanced_order(y[tr], rng)]:
            loss = F.cross_entropy(model(torch.as_tensor(bags[i]))[None], torch.tensor([y[i]]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        p = predict_proba(model, [bags[i] for i in va])
        score = -F.nll_loss(torch.log(torch.as_tensor(p).clamp(min=1e-8)), torch.as_tensor(y[va])).item()
        if score > best:
            best, best_state = score, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model.eval()


@torch.no_grad()
def predict_proba(model: GatedABMIL, bags) -> np.ndarray:
    model.eval()
    return np.stack([torch.softmax(model(torch.as_tensor(b)), -1).numpy() for b in bags])


def abmil_cv(bags: list[np.ndarray], y: np.ndarray, test: np.ndarray, cfg: MILConfig | None = None):
    """Train ABMIL by stratified CV on the non-test slides; return (test probabilities, fold models)."""
    cfg = cfg or MILConfig()
    y = np.asarray(y, dtype=np.int64)
    dev = np.setdiff1d(np.arange(len(bags)), test)
    n_classes = int(y.max()) + 1
    min_count = min(np.sum(y[dev] == c) for c in np.unique(y[dev]))
    skf = StratifiedKFold(n_splits=max(2, min(cfg.folds, min_count)), shuffle=True, random_state=cfg.seed)
    models = [
        _train_one(bags, y, dev[tr], dev[va], n_classes, cfg, cfg.seed + f)
        for f, (tr, va) in enumerate(skf.split(dev, y[dev]))
    ]
    p = np.mean([predict_proba(m, [bags[i] for i in test]) for m in models], axis=0)
    return p, models


def mean_pool_probe(bags, y, test, seed: int = 0) -> np.ndarray:
    """Logistic regression on mean-pooled bags (C chosen by inner CV); test probabilities."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.preprocessing import StandardScaler

    x = np.stack([b.mean(0) for b in bags])
    dev = np.setdiff1d(np.arange(len(bags)), test)
    sc = StandardScaler().fit(x[dev])
    min_count = min(np.sum(y[dev] == c) for c in np.unique(y[dev]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = LogisticRegressionCV(Cs=8, cv=max(2, min(5, min_count)), max_iter=5000, random_state=seed)
        clf.fit(sc.transform(x[dev]), y[dev])
    return clf.predict_proba(sc.transform(x[test]))


def classification_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    pred = proba.argmax(1)
    out = {"balanced_accuracy": balanced_accuracy_score(y, pred)}
    if len(np.unique(y)) >= 2:
        out["auroc"] = (
            roc_auc_score(y, proba[:, 1])
            if proba.shape[1] == 2
            else roc_auc_score(y, proba, multi_class="ovr", average="macro")
        )
    return out
