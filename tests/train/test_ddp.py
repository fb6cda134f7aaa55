"""Data-parallel training with all-gathered negatives: 2 CPU processes (gloo) = one process, loss and grads."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from spade_st._dist import DistInfo
from spade_st.experts import SpadeConfig, SpadeModel
from spade_st.train.loop import allreduce_grads, expert_losses

E, B, D, G = 3, 8, 12, 7


def _setup(loss: str):
    torch.manual_seed(0)
    cfg = SpadeConfig(
        encoder="x", feature_dim=D, genes=[f"g{i}" for i in range(G)], n_experts=E, dropout=0.0, loss=loss
    )
    model = SpadeModel(cfg, np.random.default_rng(0).normal(size=(E, D)), np.arange(E))
    g = torch.Generator().manual_seed(1)
    feats, genes = torch.randn(E, B, D, generator=g), torch.randn(E, B, G, generator=g)
    mask = torch.ones(E, B, dtype=torch.bool)
    mask[2, 6:] = False  # a short batch for expert 2 (padding falls on rank 1)
    return model, feats, genes, mask


def _grads(model):
    return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}


def _worker(rank, world, init_file, loss, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model, feats, genes, mask = _setup(loss)
    b = B // world
    sl = slice(rank * b, (rank + 1) * b)
    info = DistInfo(rank=rank, world_size=world)
    per = expert_losses(model, feats[:, sl], genes[:, sl], mask[:, sl], loss, 1.0, info)
    per.sum().backward()
    allreduce_grads(list(model.parameters()), info, replicated=[model.logit_scale] if loss == "infonce" else ())
    out[rank] = {"loss": per.detach().clone(), "grads": _grads(model)}
    dist.destroy_process_group()


def _check(loss, tmp_path):
    model, feats, genes, mask = _setup(loss)
    ref = expert_losses(model, feats, genes, mask, loss, 1.0)
    ref.sum().backward()
    ref_grads = _grads(model)
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), loss, out), nprocs=2, join=True)
    for rank in range(2):
        torch.testing.assert_close(out[rank]["loss"], ref.detach(), rtol=1e-5, atol=1e-6)
        for k, gref in ref_grads.items():
            torch.testing.assert_close(out[rank]["grads"][k], gref, rtol=1e-4, atol=1e-6)


def test_ddp_bleep_equals_single_process(tmp_path):
    _check("bleep", tmp_path)


def test_ddp_infonce_equals_single_process(tmp_path):
    _check("infonce", tmp_path)
