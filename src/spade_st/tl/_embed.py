"""``tl.embed`` and ``tl.predict_expression``: SPADE embeddings and predicted expression of AnnData rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import __version__
from .. import _keys as K
from .._atomic import plain
from .._validation import SpadeInputError
from ._fit import features_key_of

WEIGHTS_KEY = "spade_expert_weights"  #: ``obsm`` key of the routing weights written by :func:`embed`


def _model(model):
    from ..experts.model import SpadeModel

    if isinstance(model, (str, Path)):
        return SpadeModel.from_pretrained(model), str(model)
    if not isinstance(model, SpadeModel):
        msg = f"model must be a SpadeModel or a model folder, got {type(model).__name__}"
        raise SpadeInputError(msg)
    return model, (getattr(model, "source", None) or {}).get("path")


def _features(adata, model, features_key):
    key = features_key or K.features_key(model.config.encoder)
    if key not in adata.obsm:
        found = features_key_of(adata, features_key)
        msg = (
            f"this model takes {model.config.encoder} features (obsm[{key!r}]) but the AnnData has {found!r}; "
            f"extract {model.config.encoder} features, or pass features_key= if they are stored under another name"
        )
        raise SpadeInputError(msg)
    x = np.asarray(adata.obsm[key], np.float32)
    if x.shape[1] != model.config.feature_dim:
        msg = (
            f"obsm[{key!r}] has {x.shape[1]} columns; this model takes {model.config.feature_dim}-d "
            f"{model.config.encoder} features (extract them with that encoder)"
        )
        raise SpadeInputError(msg)
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        msg = (
            f"{int(bad.sum())} of {len(x)} rows of obsm[{key!r}] hold NaN or Inf (first: row {int(np.flatnonzero(bad)[0])}); "
            "re-extract their features, or drop those rows"
        )
        raise SpadeInputError(msg)
    return key, x


def embed(adata, model, *, features_key: str | None = None, key_added: str = K.SPADE, copy: bool = False, **kwargs):
    """SPADE embeddings of every row.

    Parameters
    ----------
    adata
        Spots or tiles with the model's encoder features in ``obsm['X_<encoder>']``.
    model
        A :class:`~spade_st.experts.SpadeModel` or a model folder.
    features_key
        ``obsm`` key of the features (default ``X_<the model's encoder>``); features of another encoder are
        refused.
    key_added
        ``obsm`` key of the embeddings.
    copy
        Work on and return a copy.
    **kwargs
        To :meth:`SpadeModel.embed` (``tau_r``, ``topk``, ``batch_size``).

    Returns
    -------
    None (or the copy): ``obsm[key_added]`` (N, embed_dim), ``obsm['spade_expert_weights']`` (N, E) and
    ``uns['spade']`` (encoder, experts, output, tau_r, version, model folder, the model's config as JSON).
    """
    m, folder = _model(model)
    a = adata.copy() if copy else adata
    key, x = _features(a, m, features_key)
    z, w = m.embed(x, return_weights=True, **kwargs)
    a.obsm[key_added] = z
    a.obsm[WEIGHTS_KEY] = w
    a.obsm.pop("X_umap_" + key_added.removeprefix("X_"), None)  # a UMAP of the previous embedding
    cfg = plain(m.config)
    a.uns[K.UNS] = dict(a.uns.get(K.UNS, {})) | {
        "version": __version__,
        "model": folder or "",
        "features_key": key,
        "key_added": key_added,
        "encoder": m.config.encoder,
        "n_experts": m.config.n_experts,
        "output": m.config.output,
        "tau_r": float(kwargs.get("tau_r") or m.config.tau_r),
        "config": json.dumps({k: v for k, v in cfg.items() if k != "genes"}, sort_keys=True),
    }
    return a if copy else None


def predict_expression(
    adata, model, genes=None, *, method: str = "ridge", features_key: str | None = None, predictor=None
):
    """Predicted expression of ``genes`` (default: every gene of the model's expression head) for each row.

    Parameters
    ----------
    adata
        Spots or tiles with encoder features in ``obsm`` (``X_<encoder>``); ``obsm['spatial']`` is carried over.
    model
        A :class:`~spade_st.experts.SpadeModel` or a model folder with an expression head
        (``predictor.json``: fitted at the end of pretraining, or by ``spade-st fit-predictor``).
    method
        ``ridge`` (linear head on the embedding) or ``knn`` (mean of the nearest expression prototypes in the
        latent space).
    predictor
        An :class:`~spade_st.experts.predictor.ExpressionPredictor` to use instead of the model's own.

    Returns
    -------
    A new AnnData: ``obs`` = the rows, ``var`` = genes with ``cv_r`` (the head's cross-validated Pearson r on
    held-out training samples) and ``predicted`` (``cv_r`` >= 0.1), ``X`` = predicted log1p(counts per 10k),
    float32, clipped at 0; ``uns['spade_prediction']`` says how (model path and sha256, fraction clipped).
    """
    import anndata as ad
    import pandas as pd

    from ..experts.predictor import PREDICTED_R

    m, folder = _model(model)
    head = predictor if predictor is not None else m.predictor
    if head is None:
        from ..experts.predictor import ExpressionPredictor

        head = ExpressionPredictor.load(folder or "<model folder>")  # raises, naming how to add a head
    key, x = _features(adata, m, features_key)
    z = m.embed(x)
    latent = m.embed(x, latent=True) if method == "knn" and m.config.output == "concat" else None
    cols = head.gene_index(genes)
    y = head.predict(z, latent, method=method, genes=genes)
    negative = float((y < 0).mean()) if y.size else 0.0
    y = np.maximum(y, 0.0)  # the target is log1p of counts: below 0 is no expression, not a value
    r = head.gene_r()[cols]
    var = pd.DataFrame(
        {
            "cv_r": r.astype(np.float32),  # the ridge's r on held-out training samples (NaN: not measured)
            "predicted": np.isfinite(r) & (r >= PREDICTED_R),
        },
        index=pd.Index([head.genes[i] for i in cols]),
    )
    out = ad.AnnData(X=y, obs=pd.DataFrame(index=pd.Index(adata.obs_names.astype(str), name=None)), var=var)
    if K.SPATIAL in adata.obsm:
        out.obsm[K.SPATIAL] = np.asarray(adata.obsm[K.SPATIAL])
    out.uns["spade_prediction"] = {
        "method": method,
        "target": head.target,
        "model": folder or "",
        "model_sha256": (getattr(m, "source", None) or {}).get("sha256", ""),
        "features_key": key,
        "encoder": m.config.encoder,
        "fitted_on": json.dumps(head.info, sort_keys=True),
        "clipped_below_0": negative,  # fraction of values that were negative and set to 0
        "cv_r_floor": PREDICTED_R,
        "version": __version__,
    }
    return out
