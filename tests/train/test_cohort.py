"""The paper's HEST-1k recipe: sample selection on the real HEST table, the greedy gene intersection, HVGs within it."""

from __future__ import annotations

import json
import shutil

import anndata as ad
import pytest

from spade_st.cli import main
from spade_st.genes import build_panel
from spade_st.genes.intersection import intersect_genes, read_gene_names
from spade_st.io import read_hest
from spade_st.io.layout import read_metadata
from spade_st.io.selection import SampleSelection, select_samples
from spade_st.train.cohort import resolve_cohort
from spade_st.train.config import load_config

from conftest import HEST_TABLE, extract_cli, require

PAPER = {
    "st_technology": ["Visium"],
    "species": ["Homo sapiens"],
    "exclude_organs": ["Brain", "Embryo", "Lung/Brain", "Kidney/Brain"],
    "min_nb_genes": 10000,
    "exclude_ids": ["INT17"],
}


@pytest.fixture(scope="module")
def hest_table(tmp_path_factory):
    root = tmp_path_factory.mktemp("hest_table")
    shutil.copy(require(HEST_TABLE), root / HEST_TABLE.name)
    return root, read_metadata(root)


def test_paper_selection_on_the_real_hest_table(hest_table):
    _, table = hest_table
    assert len(table) == 1229
    v11 = select_samples(table, SampleSelection(**PAPER))
    assert len(v11.kept) == 376
    organs = v11.organs.set_index("organ")["kept"].to_dict()
    assert len(organs) == 15 and organs["Bowel"] == 72 and organs["Ovary"] == 2
    assert sum(organs.values()) == 376
    v10 = select_samples(table, SampleSelection(**PAPER, hest_version=["v1_0_0"]))
    assert len(v10.kept) == 293
    assert "INT17" not in v10.kept and v10.dropped["INT17"] == "exclude_ids"
    rules = v10.rules.set_index("rule")
    assert rules.loc["exclude_ids", "dropped"] == 1 and rules["after"].iloc[-1] == 293
    assert (rules["before"] - rules["dropped"] == rules["after"]).all()
    # the legacy-ST her2st copy (SPA119-SPA154) is not Visium: the paper's pretraining never saw it
    assert not [i for i in v10.kept if i.startswith("SPA")]


def test_the_shipped_paper_config_selects_293(hest_table):
    root, _ = hest_table
    cfg = load_config("spade_hest1k_uni", require=(), data=root)
    assert cfg.gene_intersection.min_genes == 10000 and cfg.hvg_scope == "intersection"
    cohort = resolve_cohort(cfg, need_files=False)
    assert len(cohort.ids) == 293 and cohort.intersection is None
    assert cohort.to_dict()["selection"]["per_organ"]["Skin"] == 63


def test_selection_errors_name_the_rule_and_the_fix(hest_table):
    _, table = hest_table
    with pytest.raises(ValueError, match=r"samples.min_nb_genes filters on the column 'nb_genes'.*remove"):
        select_samples(table.drop(columns=["nb_genes"]), SampleSelection(min_nb_genes=10))
    with pytest.raises(ValueError, match="keep none of the 1229 samples"):
        select_samples(table, SampleSelection(organs=["Spleen"]))
    # strings compare case-insensitively; no rule keeps every sample
    assert len(select_samples(table, SampleSelection(st_technology=["visium"])).kept) == 602
    assert len(select_samples(table, None).kept) == 1229


def _rename_genes(root, sid, n_foreign):
    """Give sample ``sid`` ``n_foreign`` gene names that no other sample has (its first genes)."""
    path = root / "st" / f"{sid}.h5ad"
    a = ad.read_h5ad(path)
    names = list(a.var_names)
    names[:n_foreign] = [f"FOREIGN{i}" for i in range(n_foreign)]
    a.var_names = names
    a.write_h5ad(path)


@pytest.fixture(scope="module")
def cohort_root(tmp_path_factory):
    """Six synthetic samples with one gene list; SYN04 swaps 40 of its genes for names nobody else has."""
    from spade_st.datasets import synthetic

    root = tmp_path_factory.mktemp("cohort") / "root"
    synthetic(out=root, samples=6, spots=40, genes=60, seed=5, progress=False)
    _rename_genes(root, "SYN04", 40)
    return root


def test_gene_intersection_drops_the_sample_that_would_take_it_below_the_bound(cohort_root):
    ids = [s.id for s in read_hest(cohort_root)]
    paths = {i: cohort_root / "st" / f"{i}.h5ad" for i in ids}
    full = [set(read_gene_names(p)) for i, p in paths.items() if i != "SYN04"]
    common = set.intersection(*full)
    inter = intersect_genes(paths, min_genes=len(common) - 5)
    assert "SYN04" not in inter.kept and set(inter.kept) == set(ids) - {"SYN04"}
    assert inter.dropped["SYN04"] < len(common) - 5
    assert set(inter.genes) == {g.upper() for g in common}
    # without a bound every sample stays and the intersection shrinks by SYN04's foreign names
    plain = intersect_genes(paths, min_genes=0)
    assert plain.kept == ids and len(plain.genes) < len(inter.genes)


def test_hvgs_are_chosen_inside_the_intersection(cohort_root):
    samples = read_hest(cohort_root)
    a = samples[0].adata
    within = {str(g).upper() for g in a.var_names[20:]}
    own = build_panel(samples[:3], n_top=10)
    inside = build_panel(samples[:3], n_top=10, within=within)
    assert set(inside.genes) <= within and inside.within == len(within)
    assert set(own.genes) - within  # per-sample HVGs reach genes outside it: the two recipes differ


def test_pretrain_applies_selection_and_intersection(cohort_root, tmp_path):
    feats = tmp_path / "feats"
    assert extract_cli(cohort_root, feats, "random_cnn", "--device", "cpu") == 0
    table = read_metadata(cohort_root)
    first_organ = str(table["organ"].iloc[0])
    walked = [i for i in table.index if table.loc[i, "organ"] != first_organ and i != "SYN04"]
    common = set.intersection(*[set(read_gene_names(cohort_root / "st" / f"{i}.h5ad")) for i in walked])
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(
        "encoder: random_cnn\nn_top_genes: 10\nval_fraction: 0.0\nhvg_scope: intersection\n"
        f"samples: {{exclude_organs: [{first_organ}]}}\n"
        f"gene_intersection: {{min_genes: {len(common) - 5}}}\n"
        "clustering: {k1: 2, n_experts: 2, backend: sklearn, min_expert_spots: 0}\n"
        "optim: {epochs: 1, batch_size: 16}\n"
    )
    out = tmp_path / "model"
    args = ["pretrain", "--config", cfg_file, "--data", cohort_root, "--features", feats / "random_cnn"]
    assert main([str(a) for a in [*args, "--out", out, "--device", "cpu"]]) == 0
    split = json.loads((out / "split.json").read_text())
    used = set(split["train"]) | set(split["val"])
    assert used == set(walked)
    cohort = json.loads((out / "cohort.json").read_text())
    assert cohort["gene_intersection"]["dropped"] == {"SYN04": cohort["gene_intersection"]["dropped"]["SYN04"]}
    panel = json.loads((out / "panel.json").read_text())
    assert set(panel["genes"]) <= {g.upper() for g in common} and panel["within"] == len(common)
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["samples"]["exclude_organs"] == [first_organ]
