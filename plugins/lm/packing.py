"""Packing a flat token stream into fixed windows, and which windows each rank sees when.

Windows: window i is tokens[i*S : i*S + S + 1] (S = seq_len), so windows do not overlap as
inputs and the last token of one is the first of the next only as a label. A stream of N tokens
holds (N - 1) // S windows; the few tokens after the last window are left out.

Training order: epoch e visits the windows in `permutation(seed, e)`; global batch g of the
epoch (one optimizer step) is permutation[g*G : (g+1)*G] with G = batch_size * world_size *
grad_accum. Within a global batch, micro-step m of rank r takes positions
[(m * world_size + r) * B, ... + B). So the *set* of windows in a global batch depends only on
(seed, epoch, g, G): one process with grad_accum 2 sees exactly the sequences two processes with
grad_accum 1 see. The windows left over at the end of an epoch (fewer than G) are skipped that
epoch; the next epoch's permutation puts different windows there.

Validation: one pass over windows 0..W-1 in order, global batch k = windows [k*B*world, ...),
rank r's part at offset r*B. Every rank yields the same number of batches of the same shape
(collectives stay in step); rows past the last window are padding whose labels are all
IGNORE_INDEX, so they add neither loss nor items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = -100  # label of padding rows; the cross_entropy loss ignores it by default


def window_count(num_tokens: int, seq_len: int) -> int:
    return max(0, (num_tokens - 1) // seq_len)


def epoch_permutation(num_windows: int, seed: int, epoch: int) -> np.ndarray:
    """The window order of one epoch: a function of (seed, epoch) only."""
    generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
    return generator.permutation(num_windows)


@dataclass(frozen=True)
class BatchLayout:
    """How one global batch is cut into per-rank micro-batches."""

    batch_size: int  # micro-batch per rank
    world_size: int = 1
    rank: int = 0
    grad_accum: int = 1

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size * self.grad_accum

    def micro_positions(self, micro_step: int) -> slice:
        """Positions within the global batch that this rank takes at `micro_step`."""
        start = (micro_step * self.world_size + self.rank) * self.batch_size
        return slice(start, start + self.batch_size)


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


@dataclass
class TrainPosition:
    """Where the training stream stands: global batches consumed in `epoch`, micro-steps into the next."""

    epoch: int = 0
    step: int = 0
    micro: int = 0
