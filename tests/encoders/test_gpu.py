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


def test_lora_finetuning_on_gpu_gives_the_cpu_folder_features(tmp_path):
    """LoRA on a random tiny ViT, trained on CUDA; its folder's features on CUDA (bf16) match them on CPU."""
    from safetensors.torch import save_file

    from spade_st.datasets import synthetic
    from spade_st.encoders import create_encoder
    from spade_st.encoders.registry import build_backbone
    from spade_st.train.finetune import finetune
    from spade_st.train.finetune_config import FinetuneConfig

    root = synthetic(out=tmp_path / "root", samples=3, spots=16, genes=40, seed=3, progress=False)
    arch = {"depth": 2, "embed_dim": 32, "num_heads": 2, "init_values": None}
    save_file({k: v.contiguous() for k, v in build_backbone("uni", **arch).state_dict().items()}, str(tmp_path / "w"))
    cfg = FinetuneConfig(
        data=root, out=tmp_path / "ft", encoder="uni", weights=tmp_path / "w", arch=arch, method="lora",
        epochs=2, batch_size=8, views=2, n_top_genes=8, out_dim=16, val_fraction=0.25, jitter=0.1,
        encoder_lr=1e-2, device="cuda", progress=False,
    )  # fmt: skip
    out = finetune(cfg)
    batch = np.random.default_rng(0).integers(0, 255, size=(4, 224, 224, 3), dtype=np.uint8)
    cpu = create_encoder(f"finetuned:{out}", device="cpu")(batch).numpy()
    gpu = create_encoder(f"finetuned:{out}", device="cuda")(batch).cpu().numpy()
    cos = (cpu * gpu).sum(1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(gpu, axis=1)
    assert cos.min() > 0.99
    base = create_encoder("uni", weights=tmp_path / "w", device="cpu", **arch)(batch).numpy()
    assert not np.allclose(base, cpu, atol=1e-4)  # the adapters trained and were merged
