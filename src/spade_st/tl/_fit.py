"""``tl.fit``: train a SPADE model from AnnData (or a HEST root) through the same stages as ``spade-st pretrain``."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from .. import _keys as K
from .._validation import SpadeInputError, check_raw_counts


def features_key_of(adata, features_key: str | None) -> str:
    """``features_key``, or the one ``obsm`` key ``X_<registered encoder>`` of ``adata``."""
    if features_key is not None:
        if features_key not in adata.obsm:
            msg = f"obsm has no {features_key!r} (has: {sorted(adata.obsm)}); run spade_st.tl.extract first"
            raise SpadeInputError(msg)
        return features_key
    from ..encoders import list_encoders

    found = [k for k in adata.obsm if k.startswith("X_") and k[2:] in set(list_encoders())]
    if len(found) != 1:
        msg = (
            f"cannot tell which obsm key holds the encoder features (candidates: {found or 'none'}); "
            "pass features_key='X_<encoder>' (spade_st.tl.extract writes it)"
        )
        raise SpadeInputError(msg)
    return found[0]


def _meta(a, key: str, default: str) -> str:
    if key in a.obs and a.obs[key].nunique() == 1:
        return str(a.obs[key].iloc[0])
    v = a.uns.get(K.UNS, {}).get(key, a.uns.get(key))
    return str(v) if v is not None else default


def _as_samples(adatas, features_key, out: Path, patient_key: str, organ_key: str):
    """In-memory :class:`~spade_st.io.HestSample` objects and their features written to ``out/features``."""
    from ..io import HestSample
    from ..io.features import FeatureSet, write_features

    if isinstance(adatas, dict):
        items = list(adatas.items())
    else:
        items = []
        for a in adatas:
            sid = a.uns.get(K.UNS, {}).get("sample_id")
            if sid is None:
                msg = "pass the AnnData as a dict {sample_id: adata} (or set adata.uns['spade']['sample_id'])"
                raise SpadeInputError(msg)
            items.append((str(sid), a))
    if len(items) < 2:
        msg = f"fit needs at least two samples (got {len(items)}): validation takes spots of other samples or blocks"
        raise SpadeInputError(msg)
    keys = {features_key_of(a, features_key) for _, a in items}
    if len(keys) != 1:
        msg = f"the samples hold features under different obsm keys {sorted(keys)}; pass features_key="
        raise SpadeInputError(msg)
    key = keys.pop()
    encoder = key[2:]
    feat_dir = out / "features" / encoder
    samples = []
    for sid, a in items:
        if K.SPATIAL not in a.obsm:
            msg = f"sample {sid}: AnnData has no obsm['spatial'] (spot centres in pixels)"
            raise SpadeInputError(msg)
        check_raw_counts(a.X, f"sample {sid} (adata.X)")
        fs = FeatureSet(
            features=np.asarray(a.obsm[key], np.float32),
            barcode=np.asarray(a.obs_names.astype(str)),
            attrs={"encoder": encoder},
        )
        write_features(feat_dir / f"{sid}.h5", fs)
        meta = {"organ": _meta(a, organ_key, "unknown"), "patient": _meta(a, patient_key, sid)}
        samples.append(HestSample(id=str(sid), root=out / "data", meta=meta, _adata=a))
    return samples, feat_dir, encoder


def fit(
    data,
    features_key: str | None = None,
    config="her2st",
    *,
    features: Path | str | None = None,
    out: Path | str | None = None,
    patient_key: str = "patient",
    organ_key: str = "organ",
    **options,
):
    """Train a SPADE model; returns the :class:`~spade_st.experts.SpadeModel` (with its expression head).

    Parameters
    ----------
    data
        ``{sample_id: AnnData}`` (raw counts in ``X``, ``obsm['spatial']``, features in ``obsm[features_key]``),
        a list of AnnData from :func:`extract` of HEST samples, or a HEST root path (then ``features`` =
        ``FEATS/<encoder>``).
    features_key
        ``obsm`` key of the encoder features (default: the one ``X_<encoder>`` key).
    config
        A built-in config name (``her2st``: tuned for a few sections; ``her2st_paper``; ``spade_hest1k_uni``), a
        YAML path or a :class:`~spade_st.train.PretrainConfig`. ``options`` override its options by name (``epochs=20``, ``k1=8``).
    out
        Run folder (split, store, checkpoints, model); default: a new temporary folder. Rerunning with the same
        folder and settings resumes.
    patient_key, organ_key
        Per-sample metadata for the patient-disjoint split: a constant ``obs`` column or an ``uns`` entry
        (defaults: each sample its own patient, organ "unknown").
    """
    from ..experts.model import SpadeModel
    from ..train.config import PretrainConfig, load_config
    from ..train.pretrain import pretrain

    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="spade_fit_"))
    samples = None
    if isinstance(data, (str, Path)):
        if features is None:
            msg = "fit(root) needs features='FEATS/<encoder>' (from `spade-st extract`)"
            raise SpadeInputError(msg)
        paths = {"data": Path(data), "features": Path(features)}
    else:
        out.mkdir(parents=True, exist_ok=True)
        samples, feat_dir, encoder = _as_samples(data, features_key, out, patient_key, organ_key)
        paths = {"data": None, "features": feat_dir}
        options.setdefault("encoder", encoder)
    if isinstance(config, PretrainConfig):
        import copy

        cfg = copy.deepcopy(config).set(**{k: v for k, v in options.items() if v is not None}, **paths, out=out)
        cfg.validate(require=())
    else:
        cfg = load_config(config, require=(), **(options | paths | {"out": out}))
    if samples is None:
        cfg.validate()
    elif cfg.progress:
        print(f"spade_st.tl.fit: run folder {out}", file=sys.stderr)
    folder = pretrain(cfg, samples=samples)
    return SpadeModel.from_pretrained(folder)
