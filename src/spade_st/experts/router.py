"""MoDE routing: fine stage-1 centroids vote for coarse experts (the SPADE paper, arXiv 2506.21857).

w = softmax(−‖x − c_k‖₂ / τ_r) over all stage-1 centroids, α_e = Σ_{k→e} w_k; the embedding is
Σ_e α_e · image_head_e(x). ``τ_r = 0`` is hard nearest-centroid routing; ``topk`` keeps the k heaviest experts
per patch and renormalises their weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._validation import SpadeInputError

_CPU_BLOCK = {False: 256, True: 1024}  #: rows per block on CPU, dense / sparse (fastest on a 2-core machine)
_PAD_ROWS = 512  #: padding rows the grouped sparse path may add before the per-expert loop is cheaper


def centroid_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (N, K) as ‖x‖² − 2 x·c + ‖c‖² in one matmul (what ``torch.cdist`` computes for
    these sizes, without its concatenated copies of the inputs), clamped at 0 before the root."""
    d2 = torch.addmm((centroids * centroids).sum(1), x, centroids.T, alpha=-2.0)
    return d2.add_((x * x).sum(1, keepdim=True)).clamp_(min=0).sqrt_()


def check_topk(topk: int | None, n_experts: int) -> int | None:
    """``topk`` for a model of ``n_experts`` experts: None (all) or 1..n_experts; anything else is an error."""
    if topk is None:
        return None
    if isinstance(topk, bool) or int(topk) != topk or not 1 <= int(topk) <= n_experts:
        msg = f"--topk {topk}: this model has {n_experts} expert(s); give 1 to {n_experts} (or leave it out: all)"
        raise SpadeInputError(msg)
    return int(topk)


def route_weights(
    x: torch.Tensor,
    centroids: torch.Tensor,
    centroid_expert: torch.Tensor,
    n_experts: int,
    tau_r: float = 0.1,
    topk: int | None = None,
) -> torch.Tensor:
    """Expert weights α (N, E) of features ``x`` (N, D); rows sum to 1. ``topk`` >= E keeps every expert (a
    config's top-k on a model that made fewer experts); below 1 is an error."""
    if topk is not None:
        topk = check_topk(min(int(topk), n_experts) if int(topk) == topk and topk >= 1 else topk, n_experts)
    if x.shape[-1] != centroids.shape[-1]:
        msg = f"features have dimension {x.shape[-1]}, the model routes {centroids.shape[-1]}-d features"
        raise ValueError(msg)
    d = centroid_distances(x.float(), centroids.float())  # (N, K) Euclidean
    if tau_r == 0:
        w = F.one_hot(d.argmin(1), num_classes=centroids.shape[0]).float()
    else:
        w = F.softmax(-d / tau_r, dim=1)
    onehot = torch.nn.functional.one_hot(centroid_expert.long(), n_experts).to(w.dtype)  # (K, E)
    alpha = w @ onehot
    if topk is not None and topk < n_experts:
        vals, idx = alpha.topk(topk, dim=1)
        alpha = torch.zeros_like(alpha).scatter_(1, idx, vals)
    return alpha / alpha.sum(1, keepdim=True).clamp(min=1e-30)


def mix_experts(heads, x: torch.Tensor, alpha: torch.Tensor, sparse: bool = False, grouped: bool | None = None):
    """Σ_e α_e · head_e(x): dense = one batched contraction over all experts; sparse = only experts with α > 0.

    Sparse rows are sorted by expert and run either as one padded batched contraction (every expert's rows in
    a slot of an (E, max rows per expert, D) batch: a few tensor ops whatever E is) or, when the routing is so
    unbalanced that padding would waste more than it saves, expert by expert. ``grouped`` forces one or the
    other (default: chosen by the padding it would take).
    """
    block = _CPU_BLOCK[sparse]
    if x.device.type == "cpu" and len(x) > block:  # row blocks keep the (E, rows, d) intermediates in cache
        return torch.cat(
            [
                mix_experts(heads, x[i : i + block], alpha[i : i + block], sparse, grouped)
                for i in range(0, len(x), block)
            ]
        )
    if not sparse:
        h = heads.forward_all(x)  # (E, N, d)
        return torch.einsum("ne,end->nd", alpha.to(h.dtype), h)
    E = heads.n_experts
    rows, experts = torch.nonzero(alpha > 0, as_tuple=True)
    order = torch.argsort(experts, stable=True)
    rows, experts = rows[order], experts[order]
    counts = torch.bincount(experts, minlength=E)
    weight = alpha[rows, experts].to(x.dtype)[:, None]
    cap = int(counts.max()) if len(rows) else 0
    if grouped is None:
        grouped = E * cap <= 2 * len(rows) or E * cap - len(rows) <= _PAD_ROWS
    if grouped:
        slot = torch.arange(len(rows), device=x.device) - (torch.cumsum(counts, 0) - counts)[experts]
        xp = x.new_zeros(E, cap, x.shape[1])
        xp[experts, slot] = x[rows]
        contrib = heads(xp)[experts, slot]
    else:
        contrib = x.new_empty(len(rows), heads.out_dim)
        start = 0
        for e, c in enumerate(counts.tolist()):
            if c:
                contrib[start : start + c] = heads.expert_forward(x[rows[start : start + c]], e)
                start += c
    return x.new_zeros(len(x), heads.out_dim).index_add_(0, rows, weight * contrib)  # one scatter for all experts
