"""Embedding (routing) throughput: the batched router vs a per-expert Python loop with cdist, at batch 128.

Baseline = what a research script does per batch: cdist to every centroid, softmax, sum per expert in a
Python loop, then run each of the E experts' image heads (separate nn.Modules) on the batch and add them up.
Ours = ``SpadeModel.embed``: dense (one batched contraction over stacked weights) and top-k (only the k
heaviest experts per patch). Paper shapes: 1024-d features, 16 x 16 centroids, 16 experts, 256-d.
Each rate is the best of ``--trials`` runs, interleaved (the machine's speed drifts); the spread is printed.
Last line: ``patches_per_s_dense=… patches_per_s_topk=… speedup_dense=… speedup_topk=… topk_max_rel_err=…``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from spade_st.experts import SpadeConfig, SpadeModel

from _common import last_line

D, E, K1, OUT = 1024, 16, 16, 256


def make_model(seed: int = 0) -> tuple[SpadeModel, np.ndarray]:
    """A model with clustered centroids and features drawn around them (realistic, near-hard routing)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=1.0, size=(E * K1, D)).astype(np.float32)
    cfg = SpadeConfig(encoder="uni", feature_dim=D, genes=["g"], n_experts=E, k1=K1)
    torch.manual_seed(seed)
    model = SpadeModel(cfg, centres, rng.permutation(np.arange(E * K1) % E)).eval()
    feats = centres[rng.integers(0, E * K1, 20_000)] + rng.normal(scale=0.7, size=(20_000, D)).astype(np.float32)
    return model, feats


def baseline_heads(model: SpadeModel) -> list[nn.Module]:
    """The same experts as separate BLEEP-style modules."""
    heads = []
    for e in range(E):
        sd = model.image_heads.expert_state(e)
        h = nn.ModuleDict({"projection": nn.Linear(D, OUT), "fc": nn.Linear(OUT, OUT), "layer_norm": nn.LayerNorm(OUT)})
        h.load_state_dict(sd)
        heads.append(h.eval())
    return heads


@torch.inference_mode()
def baseline_embed(heads, centroids, cmap, x, tau_r=0.1):
    d = torch.cdist(x, centroids)
    w = torch.softmax(-d / tau_r, 1)
    out = torch.zeros(len(x), OUT)
    for e in range(E):
        alpha = w[:, cmap == e].sum(1, keepdim=True)
        h = heads[e]
        p = h["projection"](x)
        out += alpha * h["layer_norm"](h["fc"](nn.functional.gelu(p)) + p)
    return out


def rate(fn, x_all: np.ndarray, batch: int, seconds: float = 3.0) -> float:
    n, t0, i = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        xb = x_all[i : i + batch]
        fn(xb)
        n += len(xb)
        i = (i + batch) % (len(x_all) - batch)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--topk", type=int, default=2)
    ap.add_argument("--trials", type=int, default=3, help="interleaved runs of each figure (best kept)")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of one run")
    args = ap.parse_args()
    model, feats = make_model()
    heads = baseline_heads(model)
    x_t = torch.from_numpy(feats)
    ref = baseline_embed(heads, model.centroids, model.centroid_expert, x_t[:512]).numpy()
    dense = model.embed(feats[:512])
    assert np.allclose(dense, ref, rtol=1e-4, atol=1e-4), "dense routing differs from the baseline"
    topk = model.embed(feats[:4096], topk=args.topk)
    full = model.embed(feats[:4096])
    rel_err = float(np.abs(topk - full).max() / np.abs(full).max())
    w = model.route(feats[:4096])
    print(f"mean experts with weight > 1e-3 per patch: {(w > 1e-3).sum(1).mean():.2f}")
    b = args.batch
    runs = {
        "base": (lambda xb: baseline_embed(heads, model.centroids, model.centroid_expert, torch.from_numpy(xb)), b),
        "dense": (lambda xb: model.embed(xb, batch_size=b), b),
        "topk": (lambda xb: model.embed(xb, batch_size=b, topk=args.topk), b),
        "big": (lambda xb: model.embed(xb, batch_size=4096), 4096),
    }
    got = {k: [] for k in runs}
    for _ in range(args.trials):  # interleaved, best kept: the machine's speed drifts between runs
        for k, (fn, bs) in runs.items():
            got[k].append(rate(fn, feats, bs, seconds=args.seconds))
    print("spread over trials: " + "; ".join(f"{k} {min(v):.0f}-{max(v):.0f}" for k, v in got.items()))
    base, pd_, pt, big = (max(got[k]) for k in ("base", "dense", "topk", "big"))
    print(
        f"batch {b}: baseline loop {base:.0f}, dense {pd_:.0f}, top-{args.topk} {pt:.0f} patches/s; "
        f"dense at batch 4096: {big:.0f} patches/s"
    )
    last_line(
        patches_per_s_dense=pd_,
        patches_per_s_topk=pt,
        speedup_dense=pd_ / base,
        speedup_topk=pt / base,
        topk_max_rel_err=rel_err,
    )


if __name__ == "__main__":
    main()
