"""The baseline for weights on disk: every needed neuron read from the file every token.

No DRAM cache and no bundling: each neuron's gate row, up row and down column are three separate
positioned reads, as a file holding the three matrices apart ("split" layout, bundle.py) needs.
Reads go straight into the output tensors, so the baseline pays no extra copy. The same
`rows(layer, neuron_ids)` interface as the cache (fetch_stats.py), for the benchmark's comparison.
"""

from __future__ import annotations

import torch

from plugins.sparse.bundle import PARTS, BundleReader
from plugins.sparse.fetch_stats import FetchStats, TokenClock


class NaiveNeuronLoader:
    def __init__(self, reader: BundleReader) -> None:
        self.reader, self.stats, self.clock = reader, FetchStats(), TokenClock()

    def ffn_dim(self, layer: int) -> int:
        return self.reader.layers[layer].ffn_dim

    def bytes_per_neuron(self, layer: int) -> int:
        return self.reader.record_bytes(layer)

    def rows(self, layer: int, neuron_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate_up_rows [2n, D], down_rows [n, D]) for neuron_ids [n], 3n reads."""
        if self.clock.tick(layer):
            self.stats.tokens += 1
        ids = neuron_ids.to(torch.int64).flatten().tolist()
        model_dim = self.reader.layers[layer].model_dim
        parts = torch.empty(PARTS, len(ids), model_dim, dtype=self.reader.dtype)  # [3, n, D]: gate, up, down
        raw = parts.view(torch.uint8).numpy()  # [3, n, D * itemsize], the same memory
        for row, neuron in enumerate(ids):
            for part in range(PARTS):
                self.reader.read_part_into(layer, neuron, part, memoryview(raw[part, row]))
        self.stats.reads_issued += PARTS * len(ids)
        self.stats.bytes_read += PARTS * len(ids) * self.reader.part_bytes(layer)
        self.stats.misses += len(ids)
        return parts[:2].reshape(2 * len(ids), model_dim), parts[2]
