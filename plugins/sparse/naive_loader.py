"""The baseline for weights on disk: every needed neuron read from the file every token.

No DRAM cache and no bundling: each neuron's gate row, up row and down column are three separate
positioned reads, as a file holding the three matrices apart ("split" layout, bundle.py) needs.
Reads go straight into the output tensors, so the baseline pays no extra copy. The same
`rows(layer, neuron_ids)` interface as the cache (fetch_stats.py), for the benchmark's comparison;
`records(layer, neuron_ids)` reads the same parts into one reused neuron-major buffer [n, 3D],
what the fused kernel (fused_ffn.py) computes from, as the cache's `resident_slots` gives it.
"""

from __future__ import annotations

import numpy as np
import torch

from plugins.sparse.bundle import PARTS, BundleReader
from plugins.sparse.fetch_stats import FetchStats, TokenClock


class NaiveNeuronLoader:
    def __init__(self, reader: BundleReader) -> None:
        self.reader, self.stats, self.clock = reader, FetchStats(), TokenClock()
        self.record_buffer = torch.empty(0, dtype=torch.uint8)  # grows to the largest request, then is reused

    def ffn_dim(self, layer: int) -> int:
        return self.reader.layers[layer].ffn_dim

    def bytes_per_neuron(self, layer: int) -> int:
        return self.reader.record_bytes(layer)

    def rows(self, layer: int, neuron_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate_up_rows [2n, D], down_rows [n, D]) for neuron_ids [n], 3n reads."""
        ids = neuron_ids.to(torch.int64).flatten().tolist()
        model_dim = self.reader.layers[layer].model_dim
        parts = torch.empty(PARTS, len(ids), model_dim, dtype=self.reader.dtype)  # [3, n, D]: gate, up, down
        raw = parts.view(torch.uint8).numpy()  # [3, n, D * itemsize], the same memory
        self._read_parts(layer, ids, lambda row, part: raw[part, row])
        return parts[:2].reshape(2 * len(ids), model_dim), parts[2]

    def records(self, layer: int, neuron_ids: torch.Tensor) -> np.ndarray:
        """The neurons' records [n, 3D] (gate row | up row | down column), 3n reads, in a buffer
        reused by the next call (a fresh one each token would cost page faults, not reads)."""
        ids = neuron_ids.to(torch.int64).flatten().tolist()
        part_bytes = self.reader.part_bytes(layer)
        needed = len(ids) * PARTS * part_bytes
        if self.record_buffer.numel() < needed:
            self.record_buffer = torch.empty(needed, dtype=torch.uint8)
        raw = self.record_buffer[:needed].numpy().reshape(len(ids), PARTS, part_bytes)  # [n, 3, D * itemsize]
        self._read_parts(layer, ids, lambda row, part: raw[row, part])
        return self.record_buffer[:needed].view(self.reader.dtype).numpy().reshape(len(ids), -1)  # [n, 3D]

    def _read_parts(self, layer: int, ids: list[int], destination) -> None:
        """One read per part of each neuron, into destination(row, part) (a uint8 array of part_bytes)."""
        if self.clock.tick(layer):
            self.stats.tokens += 1
        for row, neuron in enumerate(ids):
            for part in range(PARTS):
                self.reader.read_part_into(layer, neuron, part, memoryview(destination(row, part)))
        self.stats.reads_issued += PARTS * len(ids)
        self.stats.bytes_read += PARTS * len(ids) * self.reader.part_bytes(layer)
        self.stats.misses += len(ids)
