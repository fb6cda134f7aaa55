"""Scale: a synthetic 2M-spot store (1024-d float16 features, 7,968-gene panel) through the real pipeline stages.

Each stage runs in a fresh process, so its peak RSS is its own:

1. build   - write the packed store (``store/``: features.npy, expression.npy at float16, index.csv, store.json),
             ``split.json`` (400 samples of 5,000 spots, 8 organs, 10 % of the samples held out) and ``panel.json``;
2. cluster - :func:`spade_st.train.pretrain.cluster_store`: two-stage clustering of the training rows, read from
             the store in chunks (faiss, 16 per organ, 16 experts, the paper's niter/nredo);
3. train   - :func:`spade_st.train.pretrain.train` for one epoch with the paper's config (batch 512, 256-d,
             BLEEP, AdamW), validation pass and checkpoint included;
4. embed   - ``SpadeModel.from_pretrained`` + ``embed`` over the store in 10k-row chunks read with ``preadv``,
             embeddings appended to a file; after a one-chunk warm-up, throughput (spots/s) of the first 10k,
             100k, 1M and all spots, and within each window between those marks.

The features are 16 tissue types shared by the organs plus an organ shift and noise (structure for the clustering); the expression
rows are draws from a pool of 65,536 random log1p-like rows (80 % zeros), which keeps the build I/O-bound.
Needs ``spots * 18 kB`` of temporary disk (36 GB for 2M; ``--tmp DIR``).
Last line: ``spots=… peak_rss_gb=… train_pairs_per_s=… embed_per_s_10k=… embed_per_s_all=… embed_flatness=…``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import last_line, peak_rss_gb, write_npy_f16

D, G, ORGANS, PER_SAMPLE, CHUNK = 1024, 7968, 8, 5000, 20_000
CHECKPOINTS = (10_000, 100_000, 1_000_000, 2_000_000)


def build(run: Path, n: int) -> dict:
    import pandas as pd

    from spade_st._atomic import atomic_write_json
    from spade_st.genes import GenePanel
    from spade_st.train.splits import Split

    store = run / "store"
    store.mkdir(parents=True)
    n_samples = -(-n // PER_SAMPLE)
    sample = np.arange(n) // PER_SAMPLE
    organ = sample % ORGANS
    rng = np.random.default_rng(0)
    # 16 tissue types shared by all organs, shifted per organ: stage 1 finds the types within each organ,
    # stage 2 joins the same type across organs (the structure SPADE's clustering assumes)
    types = rng.normal(scale=3.0, size=(16, D)).astype(np.float32)
    shift = rng.normal(scale=1.0, size=(ORGANS, D)).astype(np.float32)

    def feature_chunks():
        for i in range(0, n, CHUNK):
            o = organ[i : i + CHUNK]
            c = types[rng.integers(0, 16, len(o))] + shift[o]
            yield c + rng.standard_normal(c.shape, dtype=np.float32)

    pool = np.empty((65_536, G), np.float16)
    for i in range(0, len(pool), 4096):
        block = rng.random((4096, G), dtype=np.float32)
        pool[i : i + 4096] = np.where(block < 0.8, 0, (block - 0.8) * 30)  # 80 % zeros, the rest in (0, 6)

    def expression_chunks():
        for i in range(0, n, CHUNK):
            yield pool[rng.integers(0, len(pool), min(CHUNK, n - i))]

    t = time.perf_counter()
    write_npy_f16(store / "features.npy", (n, D), feature_chunks())
    write_npy_f16(store / "expression.npy", (n, G), expression_chunks())
    ids = np.array([f"S{s:04d}" for s in range(n_samples)])
    pd.DataFrame(
        {
            "sample": ids[sample],
            "barcode": np.char.add("spot", (np.arange(n) % PER_SAMPLE).astype(str)),
            "group": np.char.add("organ", organ.astype(str)),
            "patient": ids[sample],
        }
    ).to_csv(store / "index.csv", index=False)
    atomic_write_json(store / "store.json", {"hash": "synthetic", "spec": {"encoder": "synthetic"}, "n": n})
    val = [i for k, i in enumerate(ids) if k % 10 == 9]
    atomic_write_json(run / "split.json", Split(train=[i for i in ids if i not in set(val)], val=val).to_dict())
    GenePanel(genes=[f"G{i}" for i in range(G)]).to_json(run / "panel.json")
    return {"seconds": time.perf_counter() - t, "peak_rss_gb": peak_rss_gb()}


def paper_config(run: Path):
    from spade_st.train.config import load_config

    cfg = load_config("spade_hest1k_uni", require=(), out=run, epochs=1, progress=False)
    cfg.encoder = None  # read from the store
    return cfg


def cluster(run: Path) -> dict:
    from spade_st.train.pretrain import cluster_store
    from spade_st.train.splits import Split
    from spade_st.train.store import open_store

    t = time.perf_counter()
    cluster_store(paper_config(run), open_store(run / "store"), Split(**json.loads((run / "split.json").read_text())))
    spots = np.bincount(np.load(run / "clustering.npz")["train_expert"])
    return {"seconds": time.perf_counter() - t, "peak_rss_gb": peak_rss_gb(), "expert_spots": spots.tolist()}


def train(run: Path) -> dict:
    from spade_st.train.pretrain import train as train_experts

    t = time.perf_counter()
    train_experts(paper_config(run))
    n_train = len(np.load(run / "clustering.npz")["train_rows"])
    dt = time.perf_counter() - t
    return {"seconds": dt, "pairs_per_s": n_train / dt, "peak_rss_gb": peak_rss_gb()}


def embed(run: Path) -> dict:
    from spade_st.experts import SpadeModel
    from spade_st.train.store import RowFile

    model = SpadeModel.from_pretrained(run)
    feats = RowFile(run / "store" / "features.npy")
    n = len(feats)
    step = 10_000
    model.embed(feats[0:step])  # warm-up: one chunk of the size timed below
    marks = sorted({m for m in CHECKPOINTS if m < n} | {n})
    rates, windows, t = {}, {}, time.perf_counter()
    last_mark, last_t = 0, t
    with open(run / "embeddings.f32", "wb") as out:
        for i in range(0, n, step):
            out.write(model.embed(feats[i : i + step]).tobytes())
            done = min(i + step, n)
            if done in marks:
                now = time.perf_counter()
                rates[done] = done / (now - t)  # a run that embeds the first `done` spots
                windows[f"{last_mark}-{done}"] = (done - last_mark) / (now - last_t)  # spots/s within the window
                last_mark, last_t = done, now
    return {"rates": {str(k): v for k, v in rates.items()}, "windows": windows, "peak_rss_gb": peak_rss_gb()}


STAGES = {"build": build, "cluster": cluster, "train": train, "embed": embed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spots", type=int, default=2_000_000)
    ap.add_argument("--tmp", default=None, help="folder for the temporary store (needs spots * 18 kB)")
    ap.add_argument("--stage", choices=list(STAGES), help=argparse.SUPPRESS)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        res = (
            STAGES[args.stage](Path(args.run), args.spots)
            if args.stage == "build"
            else STAGES[args.stage](Path(args.run))
        )
        print(json.dumps(res))
        return
    print(f"{args.spots} spots: {D}-d float16 features, {G}-gene panel, {ORGANS} organs, paper config, 1 epoch")
    res = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        run = Path(tmp) / "run"
        for stage in STAGES:
            cmd = [sys.executable, __file__, "--stage", stage, "--run", str(run), "--spots", str(args.spots)]
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"stage {stage} failed:\n{r.stderr[-4000:]}")
            res[stage] = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"{stage}: {time.perf_counter() - t:.1f} s, peak RSS {res[stage]['peak_rss_gb']:.2f} GB", flush=True)
    print(f"spots per expert: {res['cluster']['expert_spots']}")
    print(f"train: one epoch {res['train']['seconds']:.1f} s = {res['train']['pairs_per_s']:.0f} pairs/s")
    rates = {int(k): v for k, v in res["embed"]["rates"].items()}
    print("embed throughput: " + ", ".join(f"first {k}: {v:.0f} spots/s" for k, v in rates.items()))
    print("embed throughput per window: " + ", ".join(f"{k}: {v:.0f}" for k, v in res["embed"]["windows"].items()))
    first, last = rates[min(rates)], rates[max(rates)]
    last_line(
        spots=args.spots,
        peak_rss_gb=max(r["peak_rss_gb"] for r in res.values()),
        train_pairs_per_s=res["train"]["pairs_per_s"],
        embed_per_s_10k=first,
        embed_per_s_all=last,
        embed_flatness=last / first,
    )


if __name__ == "__main__":
    main()
