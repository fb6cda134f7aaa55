"""AdamW over stacked expert parameters, with a learning rate and an on/off switch per expert.

For every parameter whose leading dimension is the expert axis, expert e is updated exactly as a separate
``torch.optim.AdamW`` would update its own copy with learning rate ``lr[e]`` at its own step count — so one
batched step equals E independent optimisers, and an expert that is done (or early-stopped) stays put.
"""

from __future__ import annotations

import math

import torch


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
        """One update of the ``active`` experts (bool (E,)) with learning rates ``lr`` (E,)."""
        b1, b2 = self.betas
        self.steps += active.to(torch.int64).cpu()
        t = self.steps.to(torch.float64)
        bc1 = (1 - b1**t).clamp(min=1e-30)
        bc2 = (1 - b2**t).clamp(min=1e-30)
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            if p.grad is None:
                continue
            shape = (self.E,) + (1,) * (p.ndim - 1)
            act = active.to(p.device).view(shape)
            lr_e = lr.to(p.device, p.dtype).view(shape)
            g = p.grad
            m.copy_(torch.where(act, m * b1 + g * (1 - b1), m))
            v.copy_(torch.where(act, v * b2 + g * g * (1 - b2), v))
            step_size = lr_e / bc1.to(p.device, p.dtype).view(shape)
            denom = v.sqrt() / bc2.sqrt().to(p.device, p.dtype).view(shape) + self.eps
            new = p * (1 - lr_e * self.wd) - step_size * m / denom
            p.copy_(torch.where(act, new, p))

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
