"""Packing a flat token stream into fixed windows, and which windows each rank sees when.

Windows: window i is tokens[i*S : i*S + S + 1] (S = seq_len), so windows do not overlap as
inputs and the last token of one is the first of the next only as a label. A stream of N tokens
holds (N - 1) // S windows; the few tokens after the last window are left out.

Training order: the windows are the items of `toolkit.data.order.EpochOrder` (a permutation per
epoch, global batches split across ranks and micro-steps so that the set of windows in a global
batch does not depend on how it is split).

Validation: one pass over windows 0..W-1 in order, global batch k = windows [k*B*world, ...),
rank r's part at offset r*B. Every rank yields the same number of batches of the same shape
(collectives stay in step); rows past the last window are padding whose labels are all
IGNORE_INDEX, so they add neither loss nor items.
"""

from __future__ import annotations

import numpy as np
import torch

from toolkit.data.order import BatchLayout, TrainPosition, epoch_permutation

__all__ = ["IGNORE_INDEX", "BatchLayout", "TrainPosition", "epoch_permutation", "make_batch", "window_count"]

IGNORE_INDEX = -100  # label of padding rows; the cross_entropy loss ignores it by default


def window_count(num_tokens: int, seq_len: int) -> int:
    return max(0, (num_tokens - 1) // seq_len)


def make_batch(tokens: np.ndarray, windows: np.ndarray, seq_len: int, rows: int | None = None,
               pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Windows as {"input_ids": [rows, S], "labels": [rows, S]}; rows past `windows` are padding."""
    rows = len(windows) if rows is None else rows
    block = np.full((rows, seq_len + 1), pad_id, dtype=np.int64)  # [rows, S + 1]
    for row, window in enumerate(windows):
        start = int(window) * seq_len
        block[row] = tokens[start:start + seq_len + 1]
    block = torch.from_numpy(block)
    labels = block[:, 1:].clone()  # [rows, S]: the next token at each position
    labels[len(windows):] = IGNORE_INDEX
    return {"input_ids": block[:, :-1].contiguous(), "labels": labels}
