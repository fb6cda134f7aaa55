"""Step layout of the batched training loop."""

from __future__ import annotations

import numpy as np
import torch

from spade_st.train.loop import step_arrays, step_mask, to_device


def test_step_mask_is_none_only_when_every_row_of_the_global_batch_is_valid():
    orders = [np.arange(10), np.arange(10, 14)]  # expert 1 has a short second batch
    _, mask = step_arrays(orders, 0, 4)
    assert step_mask(mask, "cpu") is None
    idx, mask = step_arrays(orders, 1, 4)
    assert idx[0].tolist() == [4, 5, 6, 7] and not mask[1].any()
    assert step_mask(mask, "cpu").tolist() == mask.tolist()
    # a rank's slice is all valid, another's is not: both get the tensor (they must agree on the loss's form)
    mask = np.array([[True, True, True, False]])
    assert step_mask(mask, "cpu", slice(0, 2)).tolist() == [[True, True]]
    assert step_mask(mask, "cpu", slice(2, 4)).tolist() == [[True, False]]


def test_to_device_converts_float16_blocks_to_float32():
    block = np.random.default_rng(0).random((2, 3, 5)).astype(np.float16)
    want = torch.from_numpy(block.astype(np.float32))
    assert torch.equal(to_device(block, "cpu"), want)
    if torch.cuda.is_available():  # the block travels as float16 and is converted on the device
        got = to_device(block, "cuda")
        assert got.device.type == "cuda" and torch.equal(got.cpu(), want)


def test_read_rows_of_no_rows_keeps_the_width(tmp_path):
    """A step whose active experts have all stopped early reads no rows: an empty (0, B, cols) batch."""
    from spade_st.train.loop import read_rows
    from spade_st.train.store import RowFile

    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.save(tmp_path / "x.npy", x)
    for rows in (x, RowFile(tmp_path / "x.npy")):
        assert read_rows(rows, np.zeros((0, 128), np.int64)).shape == (0, 128, 2)
        np.testing.assert_array_equal(read_rows(rows, np.array([[1, 2], [3, 0]])), x[[[1, 2], [3, 0]]])
