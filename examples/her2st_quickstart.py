"""Quickstart: five real her2st sections -> features -> SPADE model -> embeddings in AnnData -> UMAP and
predicted-expression maps of a section the model never saw.

    python examples/her2st_quickstart.py --src ../shared/data/her2st_subset --out runs/quickstart
    python examples/her2st_quickstart.py --root ROOT --out runs/quickstart   # sections already converted

Trains on C2 and C3 and predicts C4 (three serial sections of one patient); ``--sections`` and ``--epochs``
shorten it. Writes OUT/umap_by_sample.png and OUT/C4_genes.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anndata as ad
import matplotlib
import numpy as np

matplotlib.use("Agg")  # a script writes files; in a notebook leave this out

import spade_st as spade
from spade_st.genes.ridge import pearson_per_gene


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, help="the her2st_subset folder (converted into OUT/data)")
    ap.add_argument("--root", type=Path, help="an already converted HEST-layout root (instead of --src)")
    ap.add_argument("--out", type=Path, default=Path("runs/quickstart"))
    ap.add_argument(
        "--sections", nargs="+", default=["C2", "C3", "C4"], help="training sections, then the held-out one"
    )
    ap.add_argument("--epochs", type=int, default=100)
    args = ap.parse_args(argv)
    *train, held = args.sections

    # 1. the sections in HEST-1k layout (patches of 224 px at 0.5 µm/px around each spot)
    root = args.root or spade.datasets.convert_her2st_subset(args.src, args.out / "data")
    # 2. open them: each sample has its AnnData (raw counts, obsm["spatial"]) and its patches
    samples = {s.id: s for s in spade.read_hest(root, ids=args.sections)}
    # 3. frozen-encoder features of every spot -> obsm["X_efficientnet_lite0"]
    adatas = {sid: spade.tl.extract(s) for sid, s in samples.items()}
    # 4. train SPADE on the training sections (same stages as `spade-st pretrain`; resumable in OUT/model)
    model = spade.tl.fit(
        {sid: adatas[sid] for sid in train}, config="her2st", out=args.out / "model", epochs=args.epochs
    )
    # 5. SPADE embeddings of every section -> obsm["X_spade"], obsm["spade_expert_weights"]
    for a in adatas.values():
        spade.tl.embed(a, model)
    # 6. one AnnData of all spots, UMAP coloured by section
    spots = ad.concat(adatas, label="sample", index_unique=":")
    umap_ax = spade.pl.embedding(spots, "X_spade", "sample", save=args.out / "umap_by_sample.png")
    # 7. predicted expression of the held-out section (the model's expression head: ridge on the embedding)
    pred = spade.tl.predict_expression(adatas[held], model)
    # 8. measured vs predicted, each panel on its own colour scale, Pearson r in the titles, over the H&E
    with samples[held].wsi() as slide:
        thumb = slide.get_thumbnail(900)
        scale = slide.dimensions[0] / thumb.shape[1]
    # the genes the head predicts best on held-out TRAINING sections (pred.var["cv_r"]): chosen without C4
    genes = model.predictor.best_genes(3)
    fig = spade.pl.gene_maps(
        samples[held].adata,
        pred,
        genes,
        img=thumb,
        scale=scale,
        pixel_size_um=samples[held].pixel_size_um,  # a scale bar in µm on every panel
        save=args.out / f"{held}_genes.png",
    )
    measured = spade.genes.expression_target(samples[held].adata[pred.obs_names], genes)
    r = pearson_per_gene(np.asarray(pred[:, genes].X), measured)
    return {
        "umap": umap_ax,
        "gene_maps": fig,
        "pred": pred,
        "spots": spots,
        "r": dict(zip(genes, r.tolist(), strict=True)),
    }


if __name__ == "__main__":
    out = main()
    cv = out["pred"].var["cv_r"]
    for g, r in out["r"].items():
        print(f"{g}: Pearson r on the held-out section {r:.3f} (head's CV r on the training sections {cv[g]:.3f})")
