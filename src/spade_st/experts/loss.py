"""Contrastive losses, batched over experts (leading dim E), with an optional mask for short batches.

``bleep_loss`` is SPADE's/BLEEP's soft-target loss exactly: with image embeddings Z and gene embeddings S
(B x d each), logits L = S Zᵀ / τ, targets T = softmax_rows(((Z Zᵀ + S Sᵀ) / 2) · τ), spot term
CE(L, T) per row, image term CE(Lᵀ, Tᵀ) per row (Tᵀ used as is, not renormalised), loss = mean over rows of
(image + spot) / 2, τ = 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: CLIP's starting temperature of InfoNCE (learnable: logit scale log(1 / 0.07))
INFONCE_INIT_TEMPERATURE = 0.07
_NEG = -1e9  # finite "minus infinity" for masked entries: keeps 0 * log p finite in the backward pass
_TINY = torch.finfo(torch.float32).tiny


def _flush_subnormal_grad(x: torch.Tensor) -> torch.Tensor:
    """Zero the subnormal entries (|g| < 1.2e-38) of x's gradient, on CPU.

    The soft targets are nearly one-hot, so the gradient that flows back through their softmax is mostly
    exact zeros with a few subnormal values; x86 CPUs take a microcode assist on every subnormal operand and
    the two Gram-matrix products of the backward pass ran 5-6x slower for it (2.5 vs 0.45 ms each at
    B = 128, E = 16). Their contribution to any parameter gradient is below 1e-36: zeroing them is what a
    flush-to-zero FPU mode would do, for this one tensor, without changing the process's FP state.
    """
    if x.requires_grad and x.device.type == "cpu" and x.dtype == torch.float32:
        x.register_hook(lambda g: g.masked_fill(g.abs() < _TINY, 0.0))
    return x


def _masked_log_softmax(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is not None:
        x = x.masked_fill(~mask[:, None, :], _NEG)
    return F.log_softmax(x, dim=-1)


def _soft_ce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-row −Σ_j T_ij log softmax(L)_ij, (E, B); masked columns contribute nothing."""
    logp = _masked_log_softmax(logits, mask)
    prod = targets * logp
    if mask is not None:
        prod = prod.masked_fill(~mask[:, None, :], 0.0)
    return -prod.sum(-1)


def bleep_loss(z: torch.Tensor, s: torch.Tensor, tau: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-expert BLEEP loss (E,) of image embeddings ``z`` and gene embeddings ``s``, both (E, B, d).

    ``mask`` (E, B) marks valid rows (padding of short batches is ignored everywhere).
    """
    logits = s @ z.transpose(1, 2) / tau
    sim = _flush_subnormal_grad(((z @ z.transpose(1, 2)) + (s @ s.transpose(1, 2))) / 2 * tau)
    if mask is not None:
        sim = sim.masked_fill(~mask[:, None, :], _NEG)
    targets = F.softmax(sim, dim=-1)
    if mask is not None:
        targets = targets.masked_fill(~mask[:, :, None], 0.0)
    spot = _soft_ce(logits, targets, mask)
    img = _soft_ce(logits.transpose(1, 2), targets.transpose(1, 2), mask)
    per_row = (img + spot) / 2
    if mask is None:
        return per_row.mean(-1)
    per_row = per_row.masked_fill(~mask, 0.0)
    return per_row.sum(-1) / mask.sum(-1).clamp(min=1)


def infonce_loss(
    z: torch.Tensor, s: torch.Tensor, logit_scale: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) on L2-normalised embeddings with a learnable temperature, per expert (E,).

    ``logit_scale`` is log(1/T), shape (E,) or scalar; it is clamped at log(100) as CLIP does.
    """
    z = F.normalize(z, dim=-1)
    s = F.normalize(s, dim=-1)
    scale = logit_scale.clamp(max=4.6052).exp()
    scale = scale.view(-1, 1, 1) if scale.ndim == 1 else scale
    logits = scale * (s @ z.transpose(1, 2))
    eye = torch.eye(z.shape[1], device=z.device, dtype=z.dtype).expand_as(logits)
    a = _soft_ce(logits, eye, mask)
    b = _soft_ce(logits.transpose(1, 2), eye, mask)
    per_row = (a + b) / 2
    if mask is None:
        return per_row.mean(-1)
    return per_row.masked_fill(~mask, 0.0).sum(-1) / mask.sum(-1).clamp(min=1)
