"""Patches/s of the default encoder: a naive per-patch loop vs the tuned extraction path, in one run.

Naive = what research scripts do: open the h5, read one patch, preprocess it, run the model on a batch of
one. Tuned = ``spade_st.encoders.extract`` (chunked h5 reads, batches, DataLoader; bf16 + channels_last on
GPU). On a GPU machine the script also runs ``uni`` with random weights in bf16 and reports the share of the
GPU's bf16 peak it reaches. Last line: key=value pairs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import torch

from spade_st.encoders import create_encoder
from spade_st.encoders.extract import ExtractConfig, extract
from spade_st.io import read_hest

from _common import her2st_root, last_line, peak_rss_gb

BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}


def naive(root: Path, n: int) -> float:
    enc = create_encoder("efficientnet_lite0", device="cuda" if torch.cuda.is_available() else "cpu")
    paths = [s.patches.path for s in read_hest(root)]
    done, t0 = 0, time.perf_counter()
    while done < n:
        for p in paths:
            with h5py.File(p, "r") as f:
                for i in range(min(len(f["img"]), n - done)):
                    enc(f["img"][i : i + 1])
                    done += 1
            if done >= n:
                break
    return done / (time.perf_counter() - t0)


def tuned(root: Path, batch_size: int, workers: int) -> tuple[float, int]:
    n = sum(len(s.patches) for s in read_hest(root))
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        extract(
            ExtractConfig(
                data=root,
                encoder="efficientnet_lite0",
                out=Path(out),
                batch_size=batch_size,
                num_workers=workers,
                progress=False,
            )
        )
        return n / (time.perf_counter() - t0), n


def gpu_uni_share(tmp: Path) -> tuple[float, float]:
    """Patches/s of UNI (random weights, bf16) and the share of the GPU's bf16 peak."""
    from safetensors.torch import save_file

    from spade_st.encoders.vits import build_vit

    model = build_vit("uni")
    path = tmp / "uni.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    enc = create_encoder("uni", weights=path, device="cuda")
    x = torch.randint(0, 255, (512, 224, 224, 3), dtype=torch.uint8, device="cuda")
    for _ in range(3):
        enc(x)
    torch.cuda.synchronize()
    t0, reps = time.perf_counter(), 10
    for _ in range(reps):
        enc(x)
    torch.cuda.synchronize()
    pps = reps * len(x) / (time.perf_counter() - t0)
    flops_per_patch = 2 * sum(p.numel() for p in model.blocks.parameters()) * 197 + 4 * 24 * 197**2 * 1024
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), float("nan"))
    return pps, pps * flops_per_patch / (peak * 1e12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--naive-patches", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=None, help="default: the library's (256 GPU, 16 CPU)")
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    root = her2st_root()
    print(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}, torch threads {torch.get_num_threads()}")
    pps_naive = naive(root, args.naive_patches)
    print(f"naive per-patch loop: {pps_naive:.1f} patches/s ({args.naive_patches} patches)")
    pps_tuned, n = tuned(root, args.batch_size, args.workers)
    print(f"tuned extract: {pps_tuned:.1f} patches/s ({n} patches, 5 her2st sections, incl. model load)")
    out = {
        "patches_per_s_naive": pps_naive,
        "patches_per_s_tuned": pps_tuned,
        "speedup": pps_tuned / pps_naive,
        "peak_rss_gb": peak_rss_gb(),
    }
    if torch.cuda.is_available():
        with tempfile.TemporaryDirectory() as tmp:
            pps_uni, share = gpu_uni_share(Path(tmp))
        print(f"uni bf16 on {torch.cuda.get_device_name()}: {pps_uni:.0f} patches/s, {100 * share:.1f}% of bf16 peak")
        out |= {"uni_patches_per_s": pps_uni, "uni_bf16_peak_share": share}
    last_line(**out)


if __name__ == "__main__":
    main()
