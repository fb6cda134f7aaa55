"""Cross-modal retrieval on held-out spots: Recall@k image -> expression and expression -> image."""

from __future__ import annotations

import numpy as np


def recall_at_k(query: np.ndarray, keys: np.ndarray, ks=(1, 5, 10)) -> dict[int, float]:
    """Row i of ``query`` should retrieve row i of ``keys`` (cosine similarity; ties count against)."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True).clip(1e-12)
    k_ = keys / np.linalg.norm(keys, axis=1, keepdims=True).clip(1e-12)
    sim = q @ k_.T
    true = np.diag(sim)[:, None]
    rank = (sim > true).sum(1)  # 0 = retrieved first
    return {k: float((rank < k).mean()) for k in ks}


def cross_modal(img: np.ndarray, gene: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """Recall@k both ways for paired image and gene embeddings of the same spots."""
    out = {}
    for k, v in recall_at_k(img, gene, ks).items():
        out[f"img2expr_R@{k}"] = v
    for k, v in recall_at_k(gene, img, ks).items():
        out[f"expr2img_R@{k}"] = v
    return out
