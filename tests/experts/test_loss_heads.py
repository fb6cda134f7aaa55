"""Loss, heads and optimiser against direct, independent transcriptions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spade_st.experts import StackedHeads, bleep_loss, infonce_loss
from spade_st.train.optim import StackedAdamW, cosine_lr


def bleep_reference(z: torch.Tensor, s: torch.Tensor, tau: float) -> torch.Tensor:
    """The formula written out element by element (B x d inputs, one expert)."""
    B = z.shape[0]
    L = torch.zeros(B, B, dtype=torch.float64)
    T = torch.zeros(B, B, dtype=torch.float64)
    z, s = z.double(), s.double()
    for i in range(B):
        for j in range(B):
            L[i, j] = torch.dot(s[i], z[j]) / tau
            T[i, j] = (torch.dot(z[i], z[j]) + torch.dot(s[i], s[j])) / 2 * tau
    T = torch.exp(T - T.max(1, keepdim=True).values)
    T = T / T.sum(1, keepdim=True)
    total = 0.0
    for i in range(B):
        logp_row = L[i] - torch.logsumexp(L[i], 0)  # log softmax of row i of L
        spot = -(T[i] * logp_row).sum()
        col = L[:, i]  # row i of L^T
        logp_col = col - torch.logsumexp(col, 0)
        img = -(T[:, i] * logp_col).sum()  # row i of T^T, not renormalised
        total += (img + spot) / 2
    return total / B


@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
def test_bleep_loss_matches_formula(tau):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 7, 5, generator=g)
    s = torch.randn(3, 7, 5, generator=g)
    got = bleep_loss(z, s, tau)
    for e in range(3):
        torch.testing.assert_close(got[e].double(), bleep_reference(z[e], s[e], tau), rtol=1e-5, atol=1e-6)


def test_mask_equals_shorter_batch():
    g = torch.Generator().manual_seed(1)
    z, s = torch.randn(2, 6, 4, generator=g), torch.randn(2, 6, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    got = bleep_loss(z, s, 1.0, mask)
    torch.testing.assert_close(got[0], bleep_loss(z[:1, :4], s[:1, :4])[0])
    torch.testing.assert_close(got[1], bleep_loss(z[1:], s[1:])[0])
    # padding gets no gradient and the loss stays finite
    z.requires_grad_(True)
    bleep_loss(z, s, 1.0, mask).sum().backward()
    assert torch.isfinite(z.grad).all() and (z.grad[0, 4:] == 0).all()


def test_infonce_matches_clip():
    g = torch.Generator().manual_seed(2)
    z, s = torch.randn(1, 8, 4, generator=g), torch.randn(1, 8, 4, generator=g)
    scale = torch.tensor([np.log(10.0)], dtype=torch.float32)
    logits = 10.0 * F.normalize(s[0], dim=-1) @ F.normalize(z[0], dim=-1).T
    y = torch.arange(8)
    ref = (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y)) / 2
    torch.testing.assert_close(infonce_loss(z, s, scale)[0], ref)


class BleepHead(nn.Module):
    """BLEEP's ProjectionHead, written independently as the reference."""

    def __init__(self, d_in, d_out=256, dropout=0.1):
        super().__init__()
        self.projection = nn.Linear(d_in, d_out)
        self.gelu = nn.GELU()
        self.fc = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(d_out)

    def forward(self, x):
        p = self.projection(x)
        x = self.dropout(self.fc(self.gelu(p)))
        return self.layer_norm(x + p)


def test_stacked_heads_equal_separate_heads():
    torch.manual_seed(0)
    E, d_in = 3, 10
    refs = [BleepHead(d_in, 16).eval() for _ in range(E)]
    for r in refs:  # non-trivial LayerNorm parameters
        nn.init.normal_(r.layer_norm.weight)
        nn.init.normal_(r.layer_norm.bias)
    heads = StackedHeads(E, d_in, 16).eval()
    for e, r in enumerate(refs):
        heads.load_expert_state(e, r.state_dict())
    x = torch.randn(E, 5, d_in)
    expect = torch.stack([refs[e](x[e]) for e in range(E)])
    torch.testing.assert_close(heads(x), expect, rtol=1e-5, atol=1e-5)
    flat = torch.randn(7, d_in)
    torch.testing.assert_close(heads.forward_all(flat), torch.stack([r(flat) for r in refs]), rtol=1e-5, atol=1e-5)
    for e, r in enumerate(refs):
        torch.testing.assert_close(heads.expert_forward(flat, e), r(flat), rtol=1e-5, atol=1e-5)
    for e, r in enumerate(refs):
        for k, v in heads.expert_state(e).items():
            torch.testing.assert_close(v, r.state_dict()[k])


def test_stacked_adamw_equals_separate_adamw_with_own_schedule():
    """In float64 (so only the maths is compared, not summation order), one stacked step = E AdamW steps."""
    torch.manual_seed(0)
    E, d_in = 3, 6
    refs = [BleepHead(d_in, 8, dropout=0.0).double() for _ in range(E)]
    heads = StackedHeads(E, d_in, 8, dropout=0.0).double()
    for e, r in enumerate(refs):
        heads.load_expert_state(e, r.state_dict())
    opts = [torch.optim.AdamW(r.parameters(), lr=1e-2, weight_decay=1e-2) for r in refs]
    sopt = StackedAdamW(heads.parameters(), E, lr=1e-2, weight_decay=1e-2)
    total = torch.tensor([6, 4, 6])  # expert 1 finishes early
    for step in range(6):
        active = torch.tensor([True, step < 4, step != 2])  # expert 2 skips a step
        x = torch.randn(E, 5, d_in, dtype=torch.float64)
        lr = cosine_lr(1e-2, sopt.steps, total)
        sopt.zero_grad()
        (heads(x).pow(2).sum(dim=(1, 2)) * active).sum().backward()
        for e in range(E):
            if active[e]:
                for g in opts[e].param_groups:
                    g["lr"] = float(lr[e])
                opts[e].zero_grad()
                refs[e](x[e]).pow(2).sum().backward()
                opts[e].step()
        sopt.step(lr, active)
    for e, r in enumerate(refs):
        for k, v in heads.expert_state(e).items():
            torch.testing.assert_close(v, r.state_dict()[k], rtol=1e-10, atol=1e-12)


def test_running_a_subset_of_experts_equals_the_full_stack():
    """forward(x[sub], sub) gives the same outputs and parameter gradients as the full stack restricted to sub."""
    torch.manual_seed(0)
    heads = StackedHeads(5, 12, 8).eval()  # dropout off: both paths are deterministic
    x = torch.randn(5, 7, 12)
    sub = torch.tensor([1, 3, 4])
    full = heads(x)[sub]
    full.square().sum().backward()
    g_full = {k: p.grad.clone() for k, p in heads.named_parameters()}
    heads.zero_grad(set_to_none=True)
    part = heads(x[sub], sub)
    part.square().sum().backward()
    torch.testing.assert_close(part, full)
    for k, p in heads.named_parameters():
        torch.testing.assert_close(p.grad, g_full[k])
        assert p.grad[[0, 2]].abs().max() == 0  # experts that did not run get no update
    with pytest.raises(ValueError, match="3 experts"):
        heads(x, sub)


def test_dropout_keeps_one_minus_rate_scaled_and_is_off_in_eval():
    """Training: each element of the residual branch is kept with probability 1 - rate and scaled by
    1 / (1 - rate), and the gradient flows through the kept ones only; eval: the plain residual sum."""
    torch.manual_seed(0)
    heads = StackedHeads(2, 4, 64, dropout=0.25)
    h = torch.full((2, 500, 64), 2.0, requires_grad=True)
    p = torch.zeros(2, 500, 64)
    out = heads._dropout_add(h, p)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01  # 64k draws: sd of the mean ~0.002
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 2.0 / 0.75))
    out.sum().backward()
    torch.testing.assert_close(h.grad, kept.float() / 0.75)
    assert not torch.equal(heads._dropout_add(h, p), out)  # fresh masks each call
    heads.eval()
    torch.testing.assert_close(heads._dropout_add(h, p + 1), h + 1)


def test_all_valid_mask_equals_no_mask():
    g = torch.Generator().manual_seed(2)
    z, s = torch.randn(3, 6, 4, generator=g), torch.randn(3, 6, 4, generator=g)
    torch.testing.assert_close(bleep_loss(z, s, 1.0, torch.ones(3, 6, dtype=torch.bool)), bleep_loss(z, s, 1.0, None))


def test_subnormal_target_gradients_are_flushed_and_nothing_else_changes():
    """Near one-hot targets (long, aligned embeddings) put subnormal values into the gradient through their
    softmax; bleep_loss zeroes exactly those (on CPU float32), so the gradients equal the float64 ones."""
    from spade_st.experts.loss import _flush_subnormal_grad

    x = torch.zeros(4, requires_grad=True)
    g = torch.tensor([1e-39, -1e-40, 1.2e-38, 0.5])  # two subnormals, the smallest normal, a normal value
    _flush_subnormal_grad(x * 1.0).backward(g)
    torch.testing.assert_close(x.grad, torch.tensor([0.0, 0.0, 1.2e-38, 0.5]))

    torch.manual_seed(0)
    c = torch.randn(1, 1, 256)  # a shared component: similarities ~100 below the diagonal, as in training
    z = F.layer_norm(c + 0.8 * torch.randn(2, 64, 256), (256,)).requires_grad_(True)
    s = F.layer_norm(c + 0.8 * torch.randn(2, 64, 256), (256,)).requires_grad_(True)
    tiny = torch.finfo(torch.float32).tiny
    seen = []

    def spy(t):
        t.register_hook(lambda gr: seen.append(((gr != 0) & (gr.abs() < tiny)).sum().item()))
        return t

    import spade_st.experts.loss as loss_mod

    orig = loss_mod._flush_subnormal_grad
    loss_mod._flush_subnormal_grad = lambda t: spy(orig(spy(t)))  # before and after the flush
    try:
        bleep_loss(z, s).sum().backward()
    finally:
        loss_mod._flush_subnormal_grad = orig
    assert len(seen) == 2 and seen[0] > 0, "these inputs must produce subnormal gradients, or the test tests nothing"
    assert seen[1] == 0
    z64, s64 = z.detach().double().requires_grad_(True), s.detach().double().requires_grad_(True)
    bleep_loss(z64, s64).sum().backward()
    torch.testing.assert_close(z.grad.double(), z64.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(s.grad.double(), s64.grad, rtol=1e-4, atol=1e-6)
