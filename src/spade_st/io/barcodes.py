"""Pairing rows of a feature or embedding file with a sample's spots by barcode, never by position."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._validation import SpadeInputError


def match_barcodes(rows, reference, what: str, among: str = "spots of the sample") -> np.ndarray:
    """Positions in ``reference`` of each barcode in ``rows`` (e.g. a feature file's rows among a sample's spots).

    Refuses missing barcodes (``rows`` None), duplicated barcodes on either side and barcodes of ``rows`` that
    are not in ``reference``: rows are never matched by position.
    """
    if rows is None:
        msg = f"{what} has no barcodes; rows cannot be matched to spots. Re-extract it with `spade-st extract`"
        raise SpadeInputError(msg)
    rows = pd.Index(np.asarray(rows).astype(str))
    ref = pd.Index(np.asarray(reference).astype(str))
    for idx, side in ((rows, what), (ref, f"the reference of {what}")):
        if idx.has_duplicates:
            dup = idx[idx.duplicated()][0]
            msg = f"{side} has duplicated barcodes (e.g. {dup!r}); each spot must appear once"
            raise SpadeInputError(msg)
    pos = ref.get_indexer(rows)
    if (pos < 0).any():
        miss = rows[pos < 0]
        msg = (
            f"{what}: {len(miss)} of {len(rows)} barcodes are not {among} (e.g. {miss[0]!r}); "
            "the file belongs to another sample or an older run: re-create it"
        )
        raise SpadeInputError(msg)
    return pos
