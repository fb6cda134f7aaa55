"""``tl.finetune``: fine-tune an encoder against a HEST root's spot expression; returns the encoder folder."""

from __future__ import annotations

from pathlib import Path


def finetune(data, encoder: str = "efficientnet_lite0", *, out, config=None, **options) -> Path:
    """Fine-tune ``encoder`` on ``data`` (a HEST-layout root) and write the encoder folder ``out``.

    Parameters
    ----------
    data
        HEST-layout root (the split is ``pretrain``'s: patient-disjoint, ``exclude=[...]`` kept out).
    encoder
        A registered encoder name (``spade_st.list_encoders()``).
    out
        Folder to write; ``tl.extract(sample, "finetuned:" + str(out))`` then uses it like any encoder.
    config
        A YAML file of finetune options (optional); ``options`` (``epochs=5``, ``train_blocks=3``,
        ``permute_expression=True``, ...: the fields of :class:`~spade_st.train.finetune_config.FinetuneConfig`)
        go on top.

    Returns
    -------
    Path
        ``out``.
    """
    from ..train.finetune import finetune as _finetune
    from ..train.finetune_config import load_finetune_config

    return _finetune(load_finetune_config(config, data=data, encoder=encoder, out=out, **options))
