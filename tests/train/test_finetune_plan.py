"""``spade-st finetune --dry-run``: the plan from the sample table alone, and the ``samples:`` rules it shares
with fine-tuning itself."""

from __future__ import annotations

import shutil

import pytest

from spade_st._validation import SpadeInputError
from spade_st.cli import main
from spade_st.train.finetune_config import FinetuneConfig, load_finetune_config
from spade_st.train.finetune_plan import encoder_cost, make_finetune_plan
from spade_st.train.plan import head_flops_per_spot

from conftest import HEST_TABLE, require


@pytest.fixture(scope="module")
def hest_table_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hest") / "hest"
    root.mkdir()
    shutil.copy(require(HEST_TABLE), root / HEST_TABLE.name)
    return root


def test_dry_run_of_lora_on_uni_at_hest_scale(hest_table_root, tmp_path, capsys):
    args = ["finetune", "--config", "finetune_hest1k_uni", "--data", str(hest_table_root)]
    assert main([*args, "--dry-run"]) == 0  # no --out: a dry run writes nothing
    text = capsys.readouterr().out
    assert "samples: 293 of 1229 kept" in text and "finetune plan: 293 samples, 627,688 spots" in text
    # 24 blocks x (qkv 1024->3072, proj 1024->1024, fc1 1024->4096, fc2 4096->1024), rank 8: r * (in + out) each
    per_block = 8 * ((1024 + 3072) + (1024 + 1024) + (1024 + 4096) + (4096 + 1024))
    assert f"LoRA rank 8 on 96 linears (qkv, proj, fc1, fc2): {24 * per_block:,} parameters" in text
    assert "uni: 123.1 GFLOP per patch" in text and "prefix cache" not in text  # LoRA runs the whole network
    assert [p.name for p in hest_table_root.iterdir()] == [HEST_TABLE.name]
    # one epoch: the training spots forward + backward through every block (2 x forward), validation forward;
    # the heads are noise beside a ViT-L (and 123.1 is rounded)
    epoch = float(text.split("| one epoch | ")[1].split(" |")[0].replace(",", ""))
    assert epoch == pytest.approx((0.9 * 2 + 0.1) * 627_688 * 123.1e9 / 1e12, rel=1e-3)
    assert float(text.split("| 10 epochs (the most) | ")[1].split(" |")[0].replace(",", "")) == pytest.approx(
        10 * epoch, rel=1e-5
    )


def test_blocks_plan_splits_the_network_and_sizes_the_cache(hest_table_root, tmp_path):
    cfg = FinetuneConfig(data=hest_table_root, out=tmp_path / "ft", encoder="efficientnet_lite0", views=8)
    cost = encoder_cost(cfg)
    assert cost.prefix + cost.trained_forward == pytest.approx(cost.full, rel=1e-9)  # the cut loses no layer
    assert cost.cut_numel == 192 * 7 * 7 and cost.parameters == 1_017_600  # blocks.6.0 + head (tested elsewhere)
    plan = make_finetune_plan(cfg)
    flops = plan.stage_flops()
    assert flops["prefix cache (once)"] == pytest.approx(plan.n_spots * 8 * cost.prefix)
    train, val = 0.9 * plan.n_spots, 0.1 * plan.n_spots
    # training spots: the trained blocks forward + backward (2 x) on the cached prefix, and the heads; validation
    # spots: the trained blocks forward; all 1229 samples' 50 HVGs bound the panel at 50 x ceil(0.9 x 1229)
    assert plan.n_genes_bound == 50 * 1107
    heads = head_flops_per_spot(1280, 50 * 1107, 256, 128)
    assert flops["one epoch"] == pytest.approx(train * (3 * cost.trained_forward + heads) + val * cost.trained_forward)
    text = plan.to_text()
    size = plan.n_spots * 8 * 192 * 7 * 7 * 4 / 1e9
    assert f"= {size:,.1f} GB on disk" in text and "1229 samples" in text  # no rules: every sample


def test_samples_rules_choose_what_finetuning_reads(tmp_path):
    from spade_st.datasets import synthetic
    from spade_st.train.finetune import _setup

    root = synthetic(out=tmp_path / "root", samples=4, spots=12, genes=30, seed=1, progress=False)
    yaml = tmp_path / "ft.yaml"
    yaml.write_text("encoder: random_cnn\nn_top_genes: 8\nsamples:\n  exclude_ids: [SYN02]\n")
    cfg = load_finetune_config(yaml, data=root, out=tmp_path / "ft", progress=False)
    split, _, spots = _setup(cfg)
    assert "SYN02" not in split.train + split.val and set(spots.sample_ids) == {"SYN00", "SYN01", "SYN03"}
    assert "samples" in cfg.record() and "samples" not in FinetuneConfig().record()  # older folders keep their key
    yaml.write_text("samples:\n  exclude_id: [SYN02]\n")
    with pytest.raises(SpadeInputError, match=r"unknown option 'exclude_id' under 'samples:' \(did you mean"):
        load_finetune_config(yaml)
    with pytest.raises(SpadeInputError, match=r"neither a file nor a built-in config.*finetune_hest1k_uni"):
        load_finetune_config("finetune_hest1k")


def test_gene_intersection_and_hvg_scope_reach_finetunings_cohort(tmp_path):
    from spade_st.datasets import synthetic
    from spade_st.train.finetune import _setup

    root = synthetic(out=tmp_path / "root", samples=3, spots=12, genes=30, seed=1, progress=False)
    yaml = tmp_path / "ft.yaml"
    yaml.write_text("encoder: random_cnn\nn_top_genes: 8\nhvg_scope: intersection\ngene_intersection:\n  min_genes: 31\n")
    cfg = load_finetune_config(yaml, data=root, out=tmp_path / "ft", progress=False)
    assert cfg.record()["gene_intersection"] == {"min_genes": 31} and cfg.record()["hvg_scope"] == "intersection"
    with pytest.raises(SpadeInputError, match="no sample has 31 genes"):
        _setup(cfg)  # the greedy intersection ran, as pretrain's would
    cfg.gene_intersection.min_genes = 30
    _, panel, _ = _setup(cfg)
    assert panel.within == 30  # HVGs chosen within the 30 shared genes
