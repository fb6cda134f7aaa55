"""AdamW over stacked expert parameters, with a learning rate and an on/off switch per expert.

For every parameter whose leading dimension is the expert axis, expert e is updated exactly as a separate
``torch.optim.AdamW`` would update its own copy with learning rate ``lr[e]`` at its own step count — so one
batched step equals E independent optimisers, and an expert that is done (or early-stopped) stays put.
"""

from __future__ import annotations

import math

import torch

_FUSED = hasattr(torch, "_fused_adamw_")


def _plain_adamw(ps, gs, ms, vs, t, lr, b1, b2, wd, eps) -> None:
    """torch.optim.AdamW's update, written out (used when the fused kernel is unavailable)."""
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    for p, g, m, v in zip(ps, gs, ms, vs, strict=True):
        p.mul_(1 - lr * wd)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v.sqrt() / math.sqrt(bc2)).add_(eps)
        p.addcdiv_(m, denom, value=-lr / bc1)


class StackedAdamW:
    """AdamW with per-expert lr and step counts (decoupled weight decay, as ``torch.optim.AdamW``)."""

    def __init__(
        self,
        params,
        n_experts: int,
        lr: float = 1e-4,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ):
        self.params = [p for p in params if p.requires_grad]
        for p in self.params:
            if p.shape[0] != n_experts:
                msg = f"parameter of shape {tuple(p.shape)} has no leading expert axis of size {n_experts}"
                raise ValueError(msg)
        self.E, self.base_lr, self.betas, self.eps, self.wd = n_experts, lr, betas, eps, weight_decay
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = torch.zeros(n_experts, dtype=torch.int64)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: torch.Tensor, active: torch.Tensor) -> None:
        """One update of the ``active`` experts (bool (E,)) with learning rates ``lr`` (E,).

        Uses torch's fused AdamW kernel on each expert's slice (views into the stacked tensors: one pass over
        memory per expert), or an equivalent plain implementation where the kernel is missing.
        """
        active = active.cpu()
        self.steps += active.to(torch.int64)
        b1, b2 = self.betas
        have = [i for i, p in enumerate(self.params) if p.grad is not None]
        for e in torch.nonzero(active).flatten().tolist():
            step_t = torch.tensor(float(self.steps[e]), dtype=torch.float32, device=self.params[0].device)
            ps = [self.params[i][e] for i in have]
            gs = [self.params[i].grad[e] for i in have]
            ms = [self.exp_avg[i][e] for i in have]
            vs = [self.exp_avg_sq[i][e] for i in have]
            if _FUSED:
                torch._fused_adamw_(
                    ps,
                    gs,
                    ms,
                    vs,
                    [],
                    [step_t] * len(ps),
                    lr=float(lr[e]),
                    beta1=b1,
                    beta2=b2,
                    weight_decay=self.wd,
                    eps=self.eps,
                    amsgrad=False,
                    maximize=False,
                )
            else:  # pragma: no cover - older torch
                _plain_adamw(ps, gs, ms, vs, float(self.steps[e]), float(lr[e]), b1, b2, self.wd, self.eps)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {"opt.steps": self.steps.clone()}
        for i, (m, v) in enumerate(zip(self.exp_avg, self.exp_avg_sq, strict=True)):
            out[f"opt.m.{i}"], out[f"opt.v.{i}"] = m.detach().cpu(), v.detach().cpu()
        return out

    def load_state_tensors(self, sd: dict[str, torch.Tensor]) -> None:
        self.steps = sd["opt.steps"].clone()
        for i, (m, v) in enumerate(zip(self.exp_avg, self.exp_avg_sq, strict=True)):
            m.copy_(sd[f"opt.m.{i}"])
            v.copy_(sd[f"opt.v.{i}"])


def cosine_lr(base: float, step: torch.Tensor, total: torch.Tensor, eta_min: float = 0.0) -> torch.Tensor:
    """Per-expert cosine decay (as CosineAnnealingLR stepped per batch): lr at each expert's own step."""
    frac = (step.to(torch.float64) / total.clamp(min=1).to(torch.float64)).clamp(max=1.0)
    return eta_min + (base - eta_min) * 0.5 * (1 + torch.cos(math.pi * frac))
