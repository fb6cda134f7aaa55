"""`spade-st bench hest` on folders in HEST-Benchmark's exact bench_data layout: a replica built from the shared
her2st sections whose raw-feature numbers must equal an independent re-computation of HEST's protocol, HEST's
result files and keys, the leakage guard, extraction from the patch files, and bad input refused up front."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from spade_st.cli import main

SPLIT_KEYS = {
    "l2_errors", "r2_scores", "pearson_corrs", "pearson_mean", "pearson_std", "l2_error_q1", "l2_error_q2",
    "l2_error_q3", "r2_score_q1", "r2_score_q2", "r2_score_q3",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# building folders in HEST's layout


def write_hest_patches(path: Path, img: np.ndarray, barcodes, coords) -> None:
    """A patch h5 as HEST ships it: img (N, 224, 224, 3) uint8 chunked per patch, barcode (N, 1) bytes, coords."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("img", data=img, chunks=(1, *img.shape[1:]))
        b = np.array([[str(x).encode()] for x in barcodes], dtype=object)
        f.create_dataset("barcode", data=b, dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("coords", data=np.asarray(coords, np.int64))


def write_splits(task: Path, splits: list[tuple[list[str], list[str]]]) -> None:
    (task / "splits").mkdir(parents=True, exist_ok=True)
    for i, (train, test) in enumerate(splits):
        for side, ids in (("train", train), ("test", test)):
            df = pd.DataFrame(
                {"sample_id": ids, "patches_path": [f"patches/{s}.h5" for s in ids],
                 "expr_path": [f"adata/{s}.h5ad" for s in ids]}
            )  # fmt: skip
            df.to_csv(task / "splits" / f"{side}_{i}.csv", index=False)


def write_genes(task: Path, genes: list[str]) -> None:
    (task / "var_50genes.json").write_text(json.dumps({"genes": list(genes)}))


SPLITS = [(["B4", "C2"], ["C3", "C4"]), (["C3", "C4"], ["B4", "C2"])]


@pytest.fixture(scope="module")
def her2st_bench(her2st_root, tmp_path_factory) -> Path:
    """bench_data/HER2ST from sections B4, C2, C3, C4: two splits, the 20 most variable log1p genes."""
    root = tmp_path_factory.mktemp("hestbench") / "bench_data"
    task = root / "HER2ST"
    expr = {}
    for s in ("B4", "C2", "C3", "C4"):
        with h5py.File(her2st_root / "patches" / f"{s}.h5", "r") as f:
            img, bc, xy = f["img"][()], f["barcode"][()].reshape(-1), f["coords"][()]
        write_hest_patches(
            task / "patches" / f"{s}.h5", img, [b.decode() if isinstance(b, bytes) else b for b in bc], xy
        )
        (task / "adata").mkdir(parents=True, exist_ok=True)
        shutil.copy(her2st_root / "st" / f"{s}.h5ad", task / "adata" / f"{s}.h5ad")
        a = ad.read_h5ad(task / "adata" / f"{s}.h5ad")
        expr[s] = pd.DataFrame(np.log1p(sp.csr_matrix(a.X).toarray()), columns=a.var_names)
    common = sorted(set.intersection(*(set(e.columns) for e in expr.values())))
    var = pd.concat([e[common] for e in expr.values()]).var().sort_values(ascending=False, kind="stable")
    write_genes(task, list(var.index[:20]))
    write_splits(task, SPLITS)
    (root / "fm_v1").mkdir()  # HEST's weights folder and HF's cache sit beside the tasks: not tasks
    (root / ".cache").mkdir()
    return root


def synthetic_bench(root: Path, n_spots: int = 24, dim: int = 40, seed: int = 0) -> tuple[Path, Path]:
    """bench_data/TOY (three samples, leave-one-out splits, 224 px patches) and a features folder for it."""
    rng = np.random.default_rng(seed)
    task, feats = root / "bench_data" / "TOY", root / "feats"
    feats.mkdir(parents=True)
    genes = [f"G{i}" for i in range(12)]
    for k, s in enumerate(["S1", "S2", "S3"]):
        n = n_spots + k
        bc = [f"{s}_{i:03d}-{'x' * (i % 3)}" for i in range(n)]  # barcodes of changing length
        write_hest_patches(task / "patches" / f"{s}.h5", rng.integers(0, 255, (n, 224, 224, 3), np.uint8), bc,
                           rng.integers(0, 5000, (n, 2)))  # fmt: skip
        x = rng.normal(size=(n, dim)).astype(np.float32)
        counts = rng.poisson(np.exp(0.3 * x[:, :12] + 1.0)).astype(np.float32)
        extra = rng.poisson(2.0, (3, 12)).astype(np.float32)  # spots without a patch
        a = ad.AnnData(sp.csr_matrix(np.vstack([counts, extra])))
        a.obs_names, a.var_names = bc + [f"{s}_extra{i}" for i in range(3)], genes
        (task / "adata").mkdir(parents=True, exist_ok=True)
        a.write_h5ad(task / "adata" / f"{s}.h5ad")
        order = rng.permutation(n)  # a feature file's rows need not follow the patches: matched by barcode
        with h5py.File(feats / f"{s}.h5", "w") as f:
            f.create_dataset("features", data=x[order])
            f.create_dataset("barcode", data=np.array(bc, dtype=object)[order], dtype=h5py.string_dtype())
    write_genes(task, genes[:10])
    write_splits(task, [(["S2", "S3"], ["S1"]), (["S1", "S3"], ["S2"]), (["S1", "S2"], ["S3"])])
    return root / "bench_data", feats


# ---------------------------------------------------------------------------------------------------------------
# an independent re-computation of HEST's protocol (numpy / sklearn / scipy and the files; no spade-st code)


def hest_reference(task: Path, feats: Path) -> tuple[list[dict], float, float]:
    """Per split {gene: r} and mean; the task's mean and std (ddof 0) over splits, from HEST's formulas."""
    from scipy.stats import pearsonr
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    genes = json.loads((task / "var_50genes.json").read_text())["genes"]
    n_splits = len(list((task / "splits").iterdir())) // 2
    out = []
    for i in range(n_splits):
        data = {}
        for side in ("train", "test"):
            xs, ys = [], []
            for sid in pd.read_csv(task / "splits" / f"{side}_{i}.csv")["sample_id"]:
                with h5py.File(feats / f"{sid}.h5", "r") as f:
                    xs.append(f["features"][()])
                    bc = [b.decode() if isinstance(b, bytes) else str(b) for b in f["barcode"][()].reshape(-1)]
                a = ad.read_h5ad(task / "adata" / f"{sid}.h5ad")[bc][:, genes]
                ys.append(np.log1p(sp.csr_matrix(a.X).toarray().astype(np.float64)))
            data[side] = np.concatenate(xs), np.concatenate(ys)
        (xtr, ytr), (xte, yte) = data["train"], data["test"]
        k = min(256, xtr.shape[1])
        pipe = Pipeline([("scaler", StandardScaler()), ("PCA", PCA(n_components=k, random_state=1))])
        xtr, xte = pipe.fit_transform(xtr).astype(np.float32), pipe.transform(xte).astype(np.float32)
        reg = Ridge(alpha=100 / (k * len(genes)), solver="lsqr", fit_intercept=False, max_iter=1000, random_state=1)
        pred = reg.fit(xtr, ytr).predict(xte)
        r = {g: pearsonr(yte[:, j], pred[:, j])[0] for j, g in enumerate(genes)}
        out.append({"genes": r, "mean": float(np.mean(list(r.values())))})
    means = [s["mean"] for s in out]
    return out, float(np.mean(means)), float(np.std(means))


def check_hest_files(out: Path, task: str, sources: list[str], n_splits: int, genes: list[str]) -> dict:
    """HEST's files exist with HEST's keys (and sort_keys / indent 4); returns dataset_results.json."""
    for src in sources:
        for i in range(n_splits):
            d = out / task / src / f"split{i}"
            text = (d / "results.json").read_text()
            res = json.loads(text)
            assert set(res) == SPLIT_KEYS and text == json.dumps(res, sort_keys=True, indent=4)
            assert [g["name"] for g in res["pearson_corrs"]] == genes and len(res["l2_errors"]) == len(genes)
            assert set(json.loads((d / "summary.json").read_text())) == SPLIT_KEYS | {"n_train", "n_test"}
            assert json.loads((d / "config.json").read_text())["dimreduce"] == "PCA"
            with np.load(d / "inference_dump.npz", allow_pickle=False) as z:
                assert {"preds_all", "targets_all"} <= set(z.files) and z["preds_all"].shape[1] == len(genes)
            assert not (d / "inference_dump.pkl").exists()
        kf = json.loads((out / task / src / "results_kfold.json").read_text())
        assert set(kf) == {"pearson_corrs", "pearson_mean", "pearson_std", "mean_per_split"}
        assert len(kf["mean_per_split"]) == n_splits
        means = [g["mean"] for g in kf["pearson_corrs"]]
        assert means == sorted(means, reverse=True) and set(kf["pearson_corrs"][0]) == {
            "name",
            "pearson_corrs",
            "mean",
            "std",
        }
    enc = json.loads((out / task / "enc_results.json").read_text())["results"]
    assert {e["encoder_name"] for e in enc} == set(sources)
    assert all(set(e) == {"encoder_name", "pearson_mean", "pearson_std"} for e in enc)
    ds = json.loads((out / "dataset_results.json").read_text())
    assert set(ds) == {"results", "average"} and ds["results"][0]["dataset_name"] == task
    csv = pd.read_csv(out / "dataset_results.csv")
    assert list(csv.columns[:2]) == ["Unnamed: 0", "dataset"] and {f"{s}_mean" for s in sources} <= set(csv.columns)
    return ds


# ---------------------------------------------------------------------------------------------------------------
# the replica (real her2st sections)


@pytest.mark.slow
def test_replica_raw_features_equal_independent_hest_protocol(her2st_bench, her2st_features, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["bench", "hest", "--bench-data", str(her2st_bench), "--features", str(her2st_features), "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    task = her2st_bench / "HER2ST"
    genes = json.loads((task / "var_50genes.json").read_text())["genes"]
    ds = check_hest_files(out, "HER2ST", ["efficientnet_lite0"], 2, genes)
    ref, mean, std = hest_reference(task, her2st_features)
    for i, split in enumerate(ref):
        got = json.loads((out / "HER2ST" / "efficientnet_lite0" / f"split{i}" / "results.json").read_text())
        assert round(got["pearson_mean"], 3) == round(split["mean"], 3)
        r = {g["name"]: g["pearson_corr"] for g in got["pearson_corrs"]}
        assert np.allclose([r[g] for g in genes], [split["genes"][g] for g in genes], atol=1e-6)
        summary = json.loads((out / "HER2ST" / "efficientnet_lite0" / f"split{i}" / "summary.json").read_text())
        assert (summary["n_train"], summary["n_test"]) == {0: (470, 364), 1: (364, 470)}[i]  # spots with patches
    kf = json.loads((out / "HER2ST" / "efficientnet_lite0" / "results_kfold.json").read_text())
    assert round(kf["pearson_mean"], 3) == round(mean, 3) and round(kf["pearson_std"], 3) == round(std, 3)
    assert ds["average"] == {"efficientnet_lite0": pytest.approx(mean, abs=5e-4)}  # keyed by the encoder's name
    long = pd.read_csv(out / "results_long.csv", keep_default_na=False)
    assert set(long.probe) == {"hest_ridge", "ridge_cv"} and set(long.fold) == {"split0", "split1"}
    assert np.isfinite(long[long.probe == "ridge_cv"].value).all()
    assert "CV ridge" in (out / "results.md").read_text()


@pytest.fixture(scope="module")
def c2c3_model(her2st_root, her2st_features, tmp_path_factory) -> Path:
    """A tiny SPADE model pretrained on C2 + C3 (2 epochs)."""
    out = tmp_path_factory.mktemp("hestmodel") / "c2c3"
    args = ["pretrain", "--config", "her2st", "--data", str(her2st_root), "--features", str(her2st_features)]
    assert main([*args, "--out", str(out), "--exclude", "A1", "B4", "C4", "--epochs", "2", "--device", "cpu"]) == 0
    return out


@pytest.mark.slow
def test_model_trained_on_a_split_sample_is_refused_then_marked(
    her2st_bench, her2st_features, c2c3_model, tmp_path, capsys
):
    out = tmp_path / "out"
    args = ["bench", "hest", "--bench-data", str(her2st_bench), "--features", str(her2st_features), "--out", str(out)]
    capsys.readouterr()
    assert main([*args, "--model", str(c2c3_model)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model spade_c2c3" in err and "task HER2ST split0" in err
    assert "C2 (train)" in err and "C3 (test)" in err and "--allow-overlap" in err
    assert not (out / "dataset_results.json").exists()  # refused before any work
    assert main([*args, "--model", str(c2c3_model), "--allow-overlap"]) == 0
    long = pd.read_csv(out / "results_long.csv", keep_default_na=False)
    spade = long[long.source == "spade_c2c3"]
    assert (
        len(spade) == 4
        and (spade.overlap != "").all()
        and (long[long.source == "efficientnet_lite0"].overlap == "").all()
    )
    assert set(spade[spade.fold == "split0"].overlap) == {"C2 (train); C3 (test)"}
    md = (out / "results.md").read_text()
    assert "In-sample cells (--allow-overlap)" in md and "C3 (test)" in md
    ds = check_hest_files(out, "HER2ST", ["efficientnet_lite0", "spade_c2c3"], 2, json.loads(
        (her2st_bench / "HER2ST" / "var_50genes.json").read_text())["genes"])  # fmt: skip
    assert set(ds["average"]) == {"efficientnet_lite0", "spade_c2c3"}
    cfg = json.loads((out / "HER2ST" / "spade_c2c3" / "split0" / "config.json").read_text())
    assert cfg["overlap"] == {"C2": "train", "C3": "test"}
    assert cfg["latent_dim"] == 64 and "min(256, d=64" in cfg["latent_dim_note"]  # the 64-d output: min(256, d)


# ---------------------------------------------------------------------------------------------------------------
# small synthetic folders (fast)


def test_synthetic_features_match_reference_and_narrow_input_is_said(tmp_path, capsys):
    bench, feats = synthetic_bench(tmp_path)
    out = tmp_path / "out"
    assert main(["bench", "hest", "--bench-data", str(bench), "--features", str(feats), "--out", str(out)]) == 0
    assert "| TOY | feats | 0.0" in capsys.readouterr().out  # HEST's numbers printed
    genes = [f"G{i}" for i in range(10)]
    ds = check_hest_files(out, "TOY", ["feats"], 3, genes)  # a features folder that names no encoder: its name
    _, mean, std = hest_reference(bench / "TOY", feats)
    kf = json.loads((out / "TOY" / "feats" / "results_kfold.json").read_text())
    assert kf["pearson_mean"] == pytest.approx(mean, abs=1e-9) and kf["pearson_std"] == pytest.approx(std, abs=1e-9)
    assert ds["average"]["feats"] == pytest.approx(mean, abs=1e-9)
    cfg = json.loads((out / "TOY" / "feats" / "split0" / "config.json").read_text())
    assert cfg["latent_dim"] == 40 and cfg["latent_dim_requested"] == 256 and cfg["ridge_alpha"] == 100 / (40 * 10)
    assert "min(256, d=40" in cfg["latent_dim_note"] and "sklearn_version" in cfg
    assert "PCA kept fewer than 256 components" in (out / "results.md").read_text()


def test_encoder_extracts_from_the_patch_files_as_hest_does(tmp_path, capsys):
    from spade_st.encoders import create_encoder

    bench, _ = synthetic_bench(tmp_path, n_spots=6)
    out = tmp_path / "out"
    args = ["bench", "hest", "--bench-data", str(bench), "--encoder", "random_cnn", "--out", str(out)]
    assert main([*args, "--batch-size", "4", "--device", "cpu"]) == 0, capsys.readouterr().err
    enc = create_encoder("random_cnn", device="cpu")
    for s in ("S1", "S2", "S3"):
        with h5py.File(bench / "TOY" / "patches" / f"{s}.h5", "r") as f:
            want = enc(f["img"][()]).numpy()
            bc = [b.decode() for b in f["barcode"][()].reshape(-1)]
        with h5py.File(out / "features" / "random_cnn" / "TOY" / f"{s}.h5", "r") as f:
            got = f["features"][()]
            assert [b.decode() if isinstance(b, bytes) else b for b in f["barcode"][()]] == bc  # patch order
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    ds = check_hest_files(out, "TOY", ["random_cnn"], 3, [f"G{i}" for i in range(10)])
    assert list(ds["average"]) == ["random_cnn"]


def _one_line_error(args, capsys) -> str:
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_bad_input_is_one_line_before_any_work(tmp_path, capsys):
    bench, feats = synthetic_bench(tmp_path, n_spots=4)
    out = tmp_path / "out"
    base = ["bench", "hest", "--out", str(out), "--features", str(feats)]
    err = _one_line_error([*base, "--bench-data", str(feats)], capsys)
    assert "is not a HEST-Benchmark bench_data folder" in err and "MahmoodLab/hest-bench" in err
    err = _one_line_error([*base, "--bench-data", str(bench), "--tasks", "IDC"], capsys)
    assert "task IDC is not in" in err and "TOY" in err
    (feats / "S3.h5").rename(tmp_path / "S3.h5")
    err = _one_line_error([*base, "--bench-data", str(bench)], capsys)
    assert "has no S3.h5" in err and "--encoder" in err
    (tmp_path / "S3.h5").rename(feats / "S3.h5")
    (bench / "TOY" / "patches" / "S2.h5").rename(tmp_path / "S2.h5")
    err = _one_line_error([*base, "--bench-data", str(bench)], capsys)
    assert "train_0.csv names sample S2 whose patch file" in err and "is missing" in err
    (tmp_path / "S2.h5").rename(bench / "TOY" / "patches" / "S2.h5")
    write_genes(bench / "TOY", ["G0", "NOPE"])
    err = _one_line_error([*base, "--bench-data", str(bench)], capsys)
    assert "lacks 1 gene(s) of var_50genes.json (e.g. NOPE)" in err
    write_genes(bench / "TOY", ["G0", "G1"])
    shutil.rmtree(bench / "TOY" / "splits")
    err = _one_line_error([*base, "--bench-data", str(bench)], capsys)
    assert "task TOY has no splits" in err
    err = _one_line_error(["bench", "hest", "--bench-data", str(bench), "--out", str(out)], capsys)
    assert "exactly one of --encoder E" in err
    assert not out.exists()
