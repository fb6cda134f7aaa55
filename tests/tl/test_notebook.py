"""The quickstart's steps in a real Jupyter kernel (nbclient): few output chunks, no cursor moves, no IProgress
warning, and each figure a ``pl`` function returns shown once."""

from __future__ import annotations

import pytest

nbformat = pytest.importorskip("nbformat", reason="needs nbformat (pip install 'spade-st[dev]')")
nbclient = pytest.importorskip("nbclient", reason="needs nbclient (pip install 'spade-st[dev]')")
pytest.importorskip("ipykernel", reason="needs ipykernel (pip install 'spade-st[dev]')")

MAX_CHUNKS = 100  #: stream and display outputs of the whole notebook

CELLS = [
    "import anndata as ad\nimport numpy as np\nimport spade_st as spade",
    "samples = {s.id: s for s in spade.read_hest(ROOT, ids=['C3', 'C4'])}",
    "adatas = {sid: spade.tl.extract(s) for sid, s in samples.items()}",
    "model = spade.tl.fit(adatas, config='her2st', out=MODEL, epochs=2)",
    "for a in adatas.values():\n    spade.tl.embed(a, model)",
    "spots = ad.concat(adatas, label='sample', index_unique=':')\nax = spade.pl.embedding(spots, 'X_spade', 'sample')",
    "pred = spade.tl.predict_expression(adatas['C4'], model)\n"
    "with samples['C4'].wsi() as slide:\n"
    "    thumb = slide.get_thumbnail(600)\n"
    "    scale = slide.dimensions[0] / thumb.shape[1]\n"
    "genes = list(pred.var_names[:2])",
    "spade.pl.gene_maps(samples['C4'].adata, pred, genes, img=thumb, scale=scale)",
]


def _text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    return str(output.get("data", {}).get("text/plain", ""))


@pytest.mark.slow
def test_quickstart_in_a_notebook_prints_one_line_per_stage(her2st_root, tmp_path, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend, as in Jupyter
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(c.replace("ROOT", repr(str(her2st_root))).replace("MODEL", repr(str(tmp_path / "m"))))
        for c in CELLS
    ]
    where = {"metadata": {"path": str(tmp_path)}}
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources=where).execute()
    outputs = [o for cell in nb.cells for o in cell.outputs]
    text = "".join(_text(o) for o in outputs)
    assert not [o for o in outputs if o.get("output_type") == "error"], text
    assert len(outputs) < MAX_CHUNKS, f"{len(outputs)} output chunks:\n{text}"
    assert "\x1b[A" not in text and "\r" not in text, text  # no cursor moves, no redrawn bars
    assert "IProgress" not in text, text
    assert "pretrain: 2/2 epoch" in text and "epoch 0:" not in text, text  # the stage bar, not the steps

    def images(cell: int) -> int:
        return sum("image/png" in o.get("data", {}) for o in nb.cells[cell].outputs)

    assert images(-1) == 1, f"gene_maps shown {images(-1)} times"  # the returned Figure, not also pyplot's
    assert images(5) == 0  # embedding's Axes went into a variable: nothing shown
