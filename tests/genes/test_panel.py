"""The gene panel: per-sample HVGs united BY NAME, harmonised symbols, missing genes as zeros."""

from __future__ import annotations

from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from spade_st._validation import SpadeInputError
from spade_st.genes import GenePanel, build_panel, harmonise, panel_report, read_ensembl_table, sample_hvgs


class S:
    def __init__(self, sid, adata):
        self.id, self.adata = sid, adata


def _adata(genes, n=100, seed=0, hot=()):
    """Poisson genes with means spread over two decades; ``hot`` genes keep their mean but are bimodal."""
    rng = np.random.default_rng(seed)
    lam = np.logspace(0, 1.5, len(genes))[rng.permutation(len(genes))]
    X = rng.poisson(lam, size=(n, len(genes))).astype(np.int32)
    for level, g in zip((20.0, 5.0, 60.0), hot, strict=False):  # different means: different seurat bins
        j = genes.index(g)
        X[:, j] = 0
        X[: n // 2, j] = rng.poisson(level, size=n // 2)
    return ad.AnnData(X=X, var=pd.DataFrame(index=genes), obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]))


def test_union_by_name_not_position():
    g1 = [f"G{i}" for i in range(300)]
    g2 = [g for g in reversed(g1) if g not in ("G3",)] + ["EXTRA1", "EXTRA2"]  # other order, other genes
    a = S("a", _adata(g1, hot=["G3", "G7"]))
    b = S("b", _adata(g2, seed=1, hot=["G20", "EXTRA1"]))
    panel = build_panel([a, b], n_top=2)
    assert set(panel.genes) == {"G3", "G7", "G20", "EXTRA1"}
    xb = panel.transform(b.adata, "b")
    j = panel.genes.index("G20")
    raw = b.adata[:, "G20"].X.ravel()
    lib = np.asarray(b.adata.X.sum(1)).ravel()
    np.testing.assert_allclose(xb[:, j], np.log1p(raw / lib * 1e4), rtol=1e-5)
    # G3 is absent from b: zeros there, counted in the report
    assert (xb[:, panel.genes.index("G3")] == 0).all()
    assert panel.missing["b"] == 1
    assert panel_report(panel).set_index("sample").loc["b", "panel_genes_missing"] == 1


def test_raw_mode_reproduces_counts():
    g = [f"G{i}" for i in range(300)]
    a = S("a", _adata(g, hot=["G1"]))
    panel = build_panel([a], n_top=3, mode="raw")
    j = panel.genes.index("G1")
    np.testing.assert_array_equal(panel.transform(a.adata)[:, j], a.adata[:, "G1"].X.ravel().astype(np.float32))


def test_case_and_duplicates_harmonised():
    genes = ["ACTB", "actb", "Erbb2", "X1", "X2"] + [f"G{i}" for i in range(200)]
    a = _adata(genes, hot=["ACTB"])  # "ACTB" and "actb" differ only by case: the same gene, summed
    panel = GenePanel(genes=["ACTB", "ERBB2"], mode="raw")
    x = panel.transform(a)
    np.testing.assert_array_equal(x[:, 0], (a.X[:, 0] + a.X[:, 1]).astype(np.float32))
    np.testing.assert_array_equal(x[:, 1], a.X[:, 2].astype(np.float32))


def test_ensembl_table(tmp_path):
    t = tmp_path / "ens.tsv"
    t.write_text("ENSG00000075624\tACTB\nENSG00000141736\tERBB2\n")
    table = read_ensembl_table(t)
    assert list(harmonise(["ENSG00000075624.17", "ERBB2", "Foo"], table)) == ["ACTB", "ERBB2", "Foo"]


def test_symbols_keep_their_case_and_match_in_any_case():
    """C12orf66 stays C12orf66 in the panel (and so in every head and map); ACTB/actb still match."""
    g = ["C12orf66", "Actb"] + [f"G{i}" for i in range(300)]
    a = _adata(g, n=100, hot=["C12orf66", "Actb"])
    panel = build_panel([SimpleNamespace(id="S1", adata=a)], n_top=2)
    assert sorted(panel.genes) == ["Actb", "C12orf66"]
    upper = GenePanel(genes=["C12ORF66", "ACTB"], mode="raw")  # a panel written in upper case still matches
    np.testing.assert_array_equal(upper.transform(a)[:, 0], a.X[:, 0].astype(np.float32))


def test_ensembl_ids_against_a_symbol_panel_are_refused():
    a = _adata([f"ENSG{i:011d}" for i in range(50)])
    with pytest.raises(SpadeInputError, match=r"Ensembl ids.*gene_symbols"):
        GenePanel(genes=["ACTB", "ERBB2"], mode="raw").transform(a, "S1")


def test_hvgs_find_planted_genes():
    g = [f"G{i}" for i in range(300)]
    hv = sample_hvgs(_adata(g, n=100, hot=["G10", "G20", "G30"]), n_top=3)
    assert set(hv) == {"G10", "G20", "G30"}


def test_panel_json_roundtrip(tmp_path):
    p = GenePanel(genes=["A", "B"], per_sample={"x": ["A"]})
    p.to_json(tmp_path / "p.json")
    assert GenePanel.from_json(tmp_path / "p.json") == p


def test_library_size_is_one_more_gene_head_input():
    import anndata as ad

    from spade_st.genes import LIBRARY_SIZE

    counts = np.array([[1, 0, 3], [0, 0, 0], [5, 5, 5]], dtype=np.float32)
    a = ad.AnnData(counts, var=pd.DataFrame(index=["ERBB2", "GRB7", "KRT19"]))
    panel = GenePanel(genes=["ERBB2", "KRT19"], mode="raw").with_library_size()
    assert panel.genes == ["ERBB2", "KRT19", LIBRARY_SIZE] and panel.with_library_size().genes == panel.genes
    np.testing.assert_allclose(panel.transform(a), np.c_[counts[:, [0, 2]], np.log1p(counts.sum(1))], rtol=1e-6)
    assert panel.with_library_size(False).genes == ["ERBB2", "KRT19"]
    panel.transform(a, sample_id="s")
    assert panel.missing["s"] == 0  # the pseudo-gene is never missing


def test_match_names_is_the_case_insensitive_lookup():
    from spade_st.genes.symbols import match_names

    assert match_names(["actb", "ERBB2", "Foo", "Krt8"], ["ACTB", "ERBB2", "Krt8", "KRT8"]) == [
        "ACTB",
        "ERBB2",
        None,
        "Krt8",
    ]
