"""Batch sources over rows built once in memory (SFT rows, preference pairs), on the core's orders.

`rows` maps each batch key to an array whose first axis is the row; `fills` gives each key's
padding value for the rows a short last validation batch is padded with (so every rank runs the
same shapes, and padding rows carry no labels). Training draws rows in the core's resumable
EpochOrder (a permutation per epoch from trainer.seed); validation is one pass in stored order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from plugins.lm.tokenizer import Tokenizer
from toolkit.data import ShardInfo
from toolkit.data.order import OrderedTrainSource, OrderedValidationSource, ValidationOrder, training_order


def take_rows(rows: dict[str, np.ndarray], indices: np.ndarray, fills: dict[str, int],
              batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """The rows at `indices` as int64 tensors, padded with `fills` to `batch_size` rows."""
    count = len(indices) if batch_size is None else batch_size
    batch = {}
    for key, values in rows.items():
        block = np.full((count, *values.shape[1:]), fills.get(key, 0), dtype=np.int64)
        block[:len(indices)] = values[indices]
        batch[key] = torch.from_numpy(block)
    return batch


class _Rows:
    def __init__(self, rows: dict[str, np.ndarray], fills: dict[str, int], tokenizer: Tokenizer,
                 batch_size: int) -> None:
        self.rows = rows
        self.fills = fills
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.num_rows = next(iter(rows.values())).shape[0]

    def run_files(self) -> dict[str, Path]:
        """The tokenizer goes with the run: generation and evaluation read it there."""
        return self.tokenizer.run_files()


class RowsTrain(OrderedTrainSource, _Rows):
    def __init__(self, rows: dict[str, np.ndarray], fills: dict[str, int], tokenizer: Tokenizer, batch_size: int,
                 shard: ShardInfo, what: str) -> None:
        super().__init__(rows, fills, tokenizer, batch_size)
        self.order = training_order(self.num_rows, batch_size, shard, what, hint="use more rows, or lower data.batch_size")

    def next_batch(self) -> dict[str, torch.Tensor]:
        return take_rows(self.rows, self.order.next_indices(), self.fills)


class RowsValidation(OrderedValidationSource, _Rows):
    def __init__(self, rows: dict[str, np.ndarray], fills: dict[str, int], tokenizer: Tokenizer, batch_size: int,
                 shard: ShardInfo) -> None:
        super().__init__(rows, fills, tokenizer, batch_size)
        self.order = ValidationOrder(self.num_rows, batch_size, shard)

    def validation_batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        return take_rows(self.rows, indices, self.fills, self.batch_size)
