"""The notebook layer (scanpy style): AnnData in, results written into it, keyword options.

::

    import spade_st as spade
    adata = spade.tl.extract(sample)                       # obsm["X_efficientnet_lite0"]
    model = spade.tl.fit({"C2": a2, "C3": a3}, epochs=20)  # a SpadeModel (with its expression head)
    spade.tl.embed(adata, model)                           # obsm["X_spade"], obsm["spade_expert_weights"]
    pred = spade.tl.predict_expression(adata, model)       # a new AnnData: spots x genes
    enc = spade.tl.finetune(root, "efficientnet_lite0", out="ft")  # an encoder folder: "finetuned:ft"

Every function works on in-memory AnnData and never writes into a data root. A feature file (ours or
TRIDENT's) opens as AnnData with ``spade_st.read_features(path)``.
"""

from ._embed import embed, predict_expression
from ._extract import extract
from ._finetune import finetune
from ._fit import fit

__all__ = ["embed", "extract", "finetune", "fit", "predict_expression"]
