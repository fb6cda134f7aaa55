"""Survival from bags: discrete-time NLL over quantile bins of event times (ABMIL), and Cox on mean-pooled bags.

Discrete-time model (as SPADE's downstream code): the uncensored event times are cut into 4 quantile bins; the
network outputs one hazard logit per bin; NLL for uncensored: −log S(t⁻) − log h(t), censored: −log S(t);
risk = −Σ_t S(t). Scored by the censoring-aware concordance index of scikit-survival (Harrell's C).
"""

from __future__ import annotations

import numpy as np
import torch

from .mil import GatedABMIL


def quantile_bins(times: np.ndarray, events: np.ndarray, n_bins: int = 4) -> np.ndarray:
    """Bin edges from the quantiles of the uncensored times (first edge 0, last +inf)."""
    t = times[events.astype(bool)] if events.any() else times
    q = np.quantile(t, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.concatenate([[0.0], q, [np.inf]])


def nll_discrete(logits: torch.Tensor, label: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Discrete-time survival NLL (alpha 0) for one or more samples; logits (n, T), label = bin index."""
    h = torch.sigmoid(logits).clamp(1e-7, 1 - 1e-7)
    s = torch.cumprod(1 - h, dim=1)
    s_prev = torch.cat([torch.ones_like(s[:, :1]), s], dim=1)
    idx = label.long().view(-1, 1)
    uncens = -(torch.log(s_prev.gather(1, idx)) + torch.log(h.gather(1, idx)))
    cens = -torch.log(s.gather(1, idx))
    ev = event.float().view(-1, 1)
    return (ev * uncens + (1 - ev) * cens).mean()


def risk_from_logits(logits: torch.Tensor) -> torch.Tensor:
    return -torch.cumprod(1 - torch.sigmoid(logits), dim=1).sum(1)


def c_index(times, events, risk) -> float:
    """Harrell's concordance index (scikit-survival)."""
    from .._optional import require

    concordance_index_censored = require("sksurv.metrics", "scikit-survival", "survival").concordance_index_censored

    return float(
        concordance_index_censored(np.asarray(events, bool), np.asarray(times, float), np.asarray(risk, float))[0]
    )


def train_survival_abmil(
    bags,
    times,
    events,
    train,
    n_bins: int = 4,
    epochs: int = 20,
    lr: float = 1e-4,
    weight_decay: float = 1e-5,
    seed: int = 0,
    val_fraction: float = 0.25,
) -> GatedABMIL:
    """Adam, one bag per step, input dropout 0.1, best epoch by validation C-index (as the released code).

    The validation slides are a seeded ``val_fraction`` of ``train``; bins come from the remaining ones.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train = np.asarray(train)
    perm = rng.permutation(train)
    n_val = max(2, round(val_fraction * len(train))) if val_fraction > 0 else 0
    val, fit = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    edges = quantile_bins(times[fit], events[fit], n_bins)
    labels = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, n_bins - 1)
    model = GatedABMIL(bags[0].shape[1], n_bins)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    drop = torch.nn.Dropout(0.1)
    best, best_state = -np.inf, None
    for _ in range(epochs):
        model.train()
        for i in rng.permutation(fit):
            logits = model(drop(torch.as_tensor(bags[i])))[None]
            loss = nll_discrete(logits, torch.tensor([labels[i]]), torch.tensor([events[i]]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        if n_val and events[val].any():
            score = c_index(times[val], events[val], predict_risk(model, [bags[i] for i in val]))
            if score > best:
                best, best_state = score, {k: v.clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval()


@torch.no_grad()
def predict_risk(model: GatedABMIL, bags) -> np.ndarray:
    model.eval()
    return np.array([float(risk_from_logits(model(torch.as_tensor(b))[None])[0]) for b in bags])


def cox_mean_pool(bags, times, events, train, test, alpha: float = 1.0) -> np.ndarray:
    """Ridge-penalised Cox model on standardised mean-pooled bags; risk scores of ``test``."""
    from sklearn.preprocessing import StandardScaler

    from .._optional import require

    CoxPHSurvivalAnalysis = require("sksurv.linear_model", "scikit-survival", "survival").CoxPHSurvivalAnalysis
    Surv = require("sksurv.util", "scikit-survival", "survival").Surv

    x = np.stack([b.mean(0) for b in bags])
    sc = StandardScaler().fit(x[train])
    y = Surv.from_arrays(events[train].astype(bool), times[train].astype(float))
    model = CoxPHSurvivalAnalysis(alpha=alpha).fit(sc.transform(x[train]), y)
    return model.predict(sc.transform(x[test]))
