"""Fine-tuned encoder vs frozen encoder on the five her2st sections, with the bench's folds, probes and tables.

Rows (sources), every one scored by the her2st bench's own code (``gene_folds.score_fold``, ``few_shot``,
its summary and markdown writer):

- ``frozen``: the frozen encoder's features (efficientnet_lite0; the same numbers as ``extract``);
- ``finetuned``: features of the encoder fine-tuned (``spade-st finetune``) without the fold's test sections;
- ``permuted``: the same fine-tuning with expression rows permuted within each section (the ST-free control);
- ``spade_ft``: SPADE (``--config``, default ``her2st``) pretrained on the fine-tuned features, same exclusion.

Leakage-free by construction: for every fold (and for the few-shot section A1) each fine-tuning and each SPADE
model is run with ``exclude`` = that fold's test sections, on the split ``pretrain`` makes of the rest.
``--seeds`` fine-tuning seeds per fold (42, 43, ...). Features are computed from the memory-mapped prefix
cache (identity view) through the fine-tuned blocks: the path that the tests check equals the whole network
to 1e-5. Usage::

    python benchmarks/her2st_finetune.py --out runs/her2st-finetune [--seeds 3] [--epochs 10] [--loss infonce]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from spade_st._validation import DataWarning
from spade_st.encoders import create_encoder
from spade_st.encoders.partial import SplitNet
from spade_st.eval._names import PROTOCOLS, TARGETS
from spade_st.eval.fewshot import DEFAULT_K, few_shot, result_rows
from spade_st.eval.gene_folds import fold_genes, make_folds, score_fold, section
from spade_st.eval.her2st_bench import headline, write_results
from spade_st.eval.stats import to_markdown
from spade_st.io import read_hest
from spade_st.io.features import FeatureSet, write_features
from spade_st.train.finetune import _Net, finetune
from spade_st.train.finetune_config import FinetuneConfig
from spade_st.train.finetune_data import build_spots, cache_key, prefix_cache
from spade_st.train.splits import Split

from _common import her2st_root, peak_rss_gb

PROBES = ("hest_ridge", "ridge_cv")


def _features(encoder: str, cache: list, spots, n_train: int) -> dict[str, np.ndarray]:
    """Each section's features from the identity view of the prefix cache through ``encoder``'s last blocks."""
    from spade_st.encoders.finetuned import folder_of, is_finetuned, read_config

    enc = create_encoder(encoder, device="cpu")
    base = read_config(folder_of(encoder))["base_encoder"] if is_finetuned(encoder) else encoder
    net = SplitNet(base, enc.backbone, n_train)
    out = {}
    with torch.inference_mode():
        for sid, arr in zip(spots.sample_ids, cache, strict=True):
            out[sid] = np.concatenate(
                [
                    net.suffix(torch.from_numpy(np.ascontiguousarray(arr[i : i + 64, 0]))).numpy()
                    for i in range(0, len(arr), 64)
                ]
            )
    return out


def _spade(args, root: Path, feats: dict, sections: dict, out: Path, exclude: list[str], seed: int) -> dict:
    """SPADE (``args.config``) pretrained on ``feats`` without ``exclude``: its embedding of every section."""
    from spade_st.experts.model import SpadeModel
    from spade_st.train.config import load_config
    from spade_st.train.pretrain import pretrain

    fdir = out / "features"
    for sid, x in feats.items():
        if not (fdir / f"{sid}.h5").is_file():
            s = sections[sid]
            attrs = {"encoder": "efficientnet_lite0-ft", "sample_id": sid, "embed_dim": x.shape[1]}
            write_features(fdir / f"{sid}.h5", FeatureSet(features=x, coords=s.coords, barcode=s.barcodes, attrs=attrs))
    pc = load_config(args.config, data=root, features=fdir, out=out / "model", exclude=sorted(exclude))
    pc.set(seed=pc.seed + seed, epochs=args.spade_epochs or pc.optim.epochs)
    pc.encoder, pc.progress, pc.predictor = "efficientnet_lite0-ft", False, False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        pretrain(pc)
    model = SpadeModel.from_pretrained(out / "model")
    return {sid: model.embed(x) for sid, x in feats.items()}


def _fit_row(folder: Path, variant: str, seed: int, exclusion: tuple) -> dict:
    """One fine-tuning's kept epoch and its validation pairing gap (from its folder's config.json)."""
    import json

    c = json.loads((folder / "config.json").read_text())
    return {
        "variant": variant, "seed": seed, "exclude": "+".join(exclusion), "best_epoch": c["best_epoch"],
        "epochs_run": c["epochs_run"], "best_val": c["best_val"], "pairing_gap": c.get("best_val_pairing_gap"),
    }  # fmt: skip


def pairing_table(fits: pd.DataFrame) -> pd.DataFrame:
    """Validation loss and pairing gap at the kept epoch, mean [95% t-interval] over exclusions x seeds, per
    variant, and the real run minus its permuted control (same exclusion and seed)."""
    from spade_st.eval.stats import mean_ci

    def cell(v) -> str:
        m, _, lo, hi, n = mean_ci(np.asarray(v, float))
        return f"{m:+.4f} [{lo:+.4f}, {hi:+.4f}] (n={n})"

    rows = [
        {"variant": v, "val loss": cell(d["best_val"]), "pairing gap": cell(d["pairing_gap"])}
        for v, d in fits.groupby("variant", sort=True)
    ]
    wide = fits.pivot_table(index=["exclude", "seed"], columns="variant", values=["best_val", "pairing_gap"])
    if {"finetuned", "permuted"} <= set(fits["variant"]):
        rows.append(
            {
                "variant": "finetuned - permuted",
                "val loss": cell(wide["best_val", "finetuned"] - wide["best_val", "permuted"]),
                "pairing gap": cell(wide["pairing_gap", "finetuned"] - wide["pairing_gap", "permuted"]),
            }
        )
    return pd.DataFrame(rows)


def paired(long: pd.DataFrame) -> pd.DataFrame:
    """Gene cells as paired differences (mean [95% t-interval] over folds x seeds): fine-tuned minus frozen
    (same fold), fine-tuned minus permuted and SPADE-on-fine-tuned minus fine-tuned (same fold and seed)."""
    from spade_st.eval.stats import mean_ci

    g = long[long["task"] == "genes"]
    keys = ["protocol", "target", "probe", "fold"]
    wide = g.pivot_table(index=[*keys, "seed"], columns="source", values="value", aggfunc="first").reset_index()
    frozen = g[g["source"] == "frozen"].set_index(keys)["value"]
    wide = wide[wide["seed"].astype(str) != ""].copy()
    wide["frozen"] = frozen.reindex(pd.MultiIndex.from_frame(wide[keys])).to_numpy()
    pairs = {"ft - frozen": ("finetuned", "frozen"), "ft - permuted": ("finetuned", "permuted")}
    if "spade_ft" in wide:
        pairs["spade_ft - ft"] = ("spade_ft", "finetuned")
    rows = []
    for (prot, target, probe), d in wide.groupby(["protocol", "target", "probe"], sort=True):
        row = {"protocol": prot, "target": target, "probe": probe}
        for name, (a, b) in pairs.items():
            m, _, lo, hi, n = mean_ci((d[a] - d[b]).to_numpy(float))
            row[name] = f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}] (n={n})"
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds per fold")
    p.add_argument("--epochs", type=int, default=10, help="most fine-tuning epochs (early stopping: 3)")
    p.add_argument("--train-blocks", type=int, default=2)
    p.add_argument("--views", type=int, default=8)
    p.add_argument("--loss", choices=["bleep", "infonce"], default="bleep", help="fine-tuning's contrastive loss")
    p.add_argument(
        "--encoder-lr", type=float, default=1e-4, help="the trained blocks' learning rate (0: heads only, the baseline)"
    )
    p.add_argument("--config", default="her2st", help="SPADE config of the spade_ft row")
    p.add_argument("--spade-epochs", type=int, help="override the SPADE config's epochs")
    p.add_argument("--fewshot-seeds", type=int, default=10)
    p.add_argument("--cache", type=Path, help="prefix cache folder (default: OUT/cache)")
    p.add_argument("--no-spade", action="store_true", help="leave out the spade_ft row")
    p.add_argument(
        "--only", nargs="+", help="score only these exclusions (e.g. A1 B4 C2 C2+C3+C4); default: every fold"
    )
    p.add_argument("--paired-only", action="store_true", help="print the paired table of OUT/results_long.csv")
    args = p.parse_args()
    if args.paired_only:
        print(to_markdown(paired(pd.read_csv(args.out / "results_long.csv", dtype={"seed": str}).fillna({"seed": ""}))))
        return
    t0 = time.perf_counter()
    root, out = her2st_root(), args.out
    samples = {s.id: s for s in read_hest(root)}
    ids = sorted(samples)
    base = FinetuneConfig(
        data=root, out=out, epochs=args.epochs, early_stop=3, train_blocks=args.train_blocks, views=args.views,
        val_fraction=0.2, cache_dir=args.cache or out / "cache", progress=False, loss=args.loss,
        encoder_lr=args.encoder_lr,
    )  # fmt: skip
    # one prefix cache for all five sections (every fold's fine-tuning reuses it)
    probe = _Net(base, torch.device("cpu"))
    from spade_st.genes import build_panel

    everything = Split(train=ids, val=[])
    spots = build_spots(list(samples.values()), everything, build_panel([samples[i] for i in ids], n_top=50))
    key = cache_key(
        {"encoder": base.encoder, "weights": probe.base_sha, "arch": base.arch}
        | {"cut": probe.split.cut, "views": base.views}
    )
    cache = prefix_cache(probe.split, probe.enc.preprocess, spots, base.views, base.cache_dir / key, 16, True)
    print(f"prefix cache: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    bcs = {sid: np.asarray(samples[sid].patches.barcodes).astype(str) for sid in ids}
    frozen = _features(base.encoder, cache, spots, args.train_blocks)
    sections = {sid: section(samples[sid], bcs[sid], TARGETS, frozen[sid]) for sid in ids}
    gene_ids = {sid: sections[sid].patient for sid in ids if sid != "A1"}
    folds = [f for pr in PROTOCOLS for f in make_folds(gene_ids, pr)]
    if args.only:
        folds = [f for f in folds if "+".join(sorted(f.test)) in set(args.only)]
    exclusions = sorted(
        {tuple(sorted(f.test)) for f in folds} | ({("A1",)} if not args.only or "A1" in args.only else set())
    )
    models: dict[tuple, dict] = {}
    fits: list[dict] = []
    tag = "" if args.loss == "bleep" else f"-{args.loss}"  # other losses keep their own folders
    for ex in exclusions:
        for i in range(args.seeds):
            for variant in ("finetuned", "permuted"):
                d = out / f"ft{tag}" / variant / f"seed{i}" / "+".join(ex)
                cfg = FinetuneConfig(**(vars(base) | {"out": d, "exclude": list(ex), "seed": 42 + i}))
                cfg.permute_expression = variant == "permuted"
                finetune(cfg)
                fits.append(_fit_row(d, variant, i, ex))
                models[variant, i, ex] = _features(f"finetuned:{d}", cache, spots, args.train_blocks)
                if variant == "finetuned" and not args.no_spade:
                    sp = out / f"spade{tag}" / f"seed{i}" / "+".join(ex)
                    models["spade_ft", i, ex] = _spade(args, root, models[variant, i, ex], sections, sp, list(ex), i)
            print(f"fold {'+'.join(ex)} seed {i}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    rows = []
    for fold in folds:
        genes = fold_genes(fold, sections, 50)
        ex = tuple(sorted(fold.test))
        srcs = [("frozen", "", frozen)] + [(v, i, x) for (v, i, e), x in models.items() if e == ex]
        base_row = {"task": "genes", "protocol": fold.protocol, "metric": "mean_pearson", "k": "", "fold": fold.name}
        for target in TARGETS:
            for name, seed, x in srcs:
                for probe_name in PROBES:
                    v = score_fold(fold, sections, x, genes, target, probe_name)
                    rows.append(
                        base_row | {"target": target, "probe": probe_name, "source": name, "seed": seed, "value": v}
                    )
    a1 = sections["A1"]
    y = a1.adata.obs["label"].astype(object).to_numpy()
    srcs = [("frozen", "", frozen)] + [(v, i, x) for (v, i, e), x in models.items() if e == ("A1",)]
    for name, seed, x in srcs if ("A1",) in exclusions else []:
        res = few_shot(x["A1"], y, ks=DEFAULT_K, seeds=args.fewshot_seeds)
        rows += result_rows(res, task="fewshot", protocol="A1 regions", target="", source=name, seed=seed).to_dict(
            "records"
        )
    summary = write_results(out, pd.DataFrame(rows))
    fits = pd.DataFrame(fits)
    fits.to_csv(out / "finetune_runs.csv", index=False)
    print(to_markdown(pairing_table(fits)))
    print(to_markdown(headline(summary)))
    long = pd.read_csv(out / "results_long.csv", dtype={"seed": str}).fillna({"seed": ""})
    print(to_markdown(paired(long)))
    print(f"seconds={time.perf_counter() - t0:.0f} peak_rss_gb={peak_rss_gb():.2f}")


if __name__ == "__main__":
    main()
