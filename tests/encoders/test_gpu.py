"""GPU checks (run where CUDA is visible; skipped with a reason elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible on this machine"),
]


def test_bf16_features_close_to_fp32_cpu():
    from spade_st.encoders import create_encoder

    batch = np.random.default_rng(0).integers(0, 255, size=(8, 224, 224, 3), dtype=np.uint8)
    cpu = create_encoder("efficientnet_lite0", device="cpu")(batch).numpy()
    gpu_enc = create_encoder("efficientnet_lite0", device="cuda")
    assert gpu_enc.precision == "bf16"
    gpu = gpu_enc(batch).cpu().numpy()
    cos = (cpu * gpu).sum(1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(gpu, axis=1)
    assert cos.min() > 0.99


def test_embed_on_gpu_matches_cpu():
    from spade_st.experts import SpadeConfig, SpadeModel

    cfg = SpadeConfig(encoder="x", feature_dim=32, genes=["a", "b"], n_experts=4, k1=2)
    m = SpadeModel(cfg, np.random.default_rng(0).normal(size=(8, 32)), np.arange(8) % 4)
    x = np.random.default_rng(1).normal(size=(100, 32)).astype(np.float32)
    ref = m.embed(x)
    np.testing.assert_allclose(m.to("cuda").embed(x), ref, rtol=1e-4, atol=1e-4)
