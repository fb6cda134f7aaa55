"""AdamW over stacked expert parameters, with a learning rate and an on/off switch per expert.

For every parameter whose leading dimension is the expert axis, expert e is updated exactly as a separate
``torch.optim.AdamW`` would update its own copy with learning rate ``lr[e]`` at its own step count — so one
batched step equals E independent optimisers, and an expert that is done (or early-stopped) stays put.
Parameters with a leading dimension of 1 (shared by every expert, e.g. one gene head for all) are one more
AdamW, stepped whenever any expert is, with their own step count and learning rate.
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
            if p.shape[0] not in (n_experts, 1):
                msg = f"parameter of shape {tuple(p.shape)} has no leading expert axis of size {n_experts} (or 1)"
                raise ValueError(msg)
        self.E, self.base_lr, self.betas, self.eps, self.wd = n_experts, lr, betas, eps, weight_decay
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = torch.zeros(n_experts, dtype=torch.int64)
        self.shared = [i for i, p in enumerate(self.params) if p.shape[0] == 1 and n_experts > 1]
        self.shared_steps = torch.zeros(1, dtype=torch.int64)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: torch.Tensor, active: torch.Tensor, shared_lr: float | None = None) -> None:
        """One update of the ``active`` experts (bool (E,)) with learning rates ``lr`` (E,), and of the shared
        parameters (if any expert is active) with ``shared_lr`` (default: the active experts' largest lr).

        Uses torch's fused AdamW kernel on each expert's slice (views into the stacked tensors: one pass over
        memory per expert), or an equivalent plain implementation where the kernel is missing.
        """
        active = active.cpu()
        self.steps += active.to(torch.int64)
        have = [i for i, p in enumerate(self.params) if p.grad is not None and i not in self.shared]
        for e in torch.nonzero(active).flatten().tolist():
            self._update([(i, e) for i in have], int(self.steps[e]), float(lr[e]))
        shared = [i for i in self.shared if self.params[i].grad is not None]
        if shared and bool(active.any()):
            self.shared_steps += 1
            rate = float(lr[active].max()) if shared_lr is None else float(shared_lr)
            self._update([(i, 0) for i in shared], int(self.shared_steps[0]), rate)

    def _update(self, slices: list[tuple[int, int]], step: int, lr: float) -> None:
        """AdamW on slice ``e`` of parameter ``i`` for each (i, e), at step count ``step``."""
        if not slices:
            return
        b1, b2 = self.betas
        ps = [self.params[i][e] for i, e in slices]
        gs = [self.params[i].grad[e] for i, e in slices]
        ms = [self.exp_avg[i][e] for i, e in slices]
        vs = [self.exp_avg_sq[i][e] for i, e in slices]
        if _FUSED:
            step_t = torch.tensor(float(step), dtype=torch.float32, device=self.params[0].device)
            torch._fused_adamw_(
                ps,
                gs,
                ms,
                vs,
                [],
                [step_t] * len(ps),
                lr=lr,
                beta1=b1,
                beta2=b2,
                weight_decay=self.wd,
                eps=self.eps,
                amsgrad=False,
                maximize=False,
            )
        else:  # pragma: no cover - older torch
            _plain_adamw(ps, gs, ms, vs, step, lr, b1, b2, self.wd, self.eps)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {"opt.steps": self.steps.clone(), "opt.shared_steps": self.shared_steps.clone()}
        for i, (m, v) in enumerate(zip(self.exp_avg, self.exp_avg_sq, strict=True)):
            out[f"opt.m.{i}"], out[f"opt.v.{i}"] = m.detach().cpu(), v.detach().cpu()
        return out

    def load_state_tensors(self, sd: dict[str, torch.Tensor]) -> None:
        self.steps = sd["opt.steps"].clone()
        self.shared_steps = sd.get("opt.shared_steps", torch.zeros(1, dtype=torch.int64)).clone()
        for i, (m, v) in enumerate(zip(self.exp_avg, self.exp_avg_sq, strict=True)):
            m.copy_(sd[f"opt.m.{i}"])
            v.copy_(sd[f"opt.v.{i}"])


def cosine_lr(base: float, step: torch.Tensor, total: torch.Tensor, eta_min: float = 0.0) -> torch.Tensor:
    """Per-expert cosine decay (as CosineAnnealingLR stepped per batch): lr at each expert's own step."""
    frac = (step.to(torch.float64) / total.clamp(min=1).to(torch.float64)).clamp(max=1.0)
    return eta_min + (base - eta_min) * 0.5 * (1 + torch.cos(math.pi * frac))
