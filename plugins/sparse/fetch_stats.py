"""The I/O counts every disk-backed neuron source keeps, and how it counts tokens.

The sources (neuron_cache.NeuronCache, naive_loader.NaiveNeuronLoader) are row providers in the
sense of the sparse FFN's `RowProvider` protocol: `rows(layer, neuron_ids)` for one decoding step
of one layer, and `ffn_dim(layer)`:
    neuron_ids     LongTensor [n]: the active (or predicted active) neurons, each at most once
    gate_up_rows   [2n, D]: rows 0..n-1 the gate rows, rows n..2n-1 the up rows of those neurons in
                   that order: proj_1.weight[cat(ids, F + ids)], the same fused order as the dense
                   proj_1, so `swiglu_reference(F.linear(x, gate_up_rows))` gives the active hidden units
    down_rows      [n, D]: proj_2.weight[:, ids].T, so the FFN output is hidden [.., n] @ down_rows
Both are fresh tensors the caller owns, in the file's dtype.

Layers are visited in increasing order once per token; a call for a layer not above the previous
call's layer starts a new token (the providers count tokens that way).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class FetchStats:
    tokens: int = 0
    bytes_read: int = 0  # bytes read from the file
    reads_issued: int = 0  # positioned read calls (one preadv of several buffers counts once)
    hits: int = 0  # neurons served from DRAM
    misses: int = 0  # neurons read from the file
    evictions: int = 0  # resident neurons dropped to make room
    window_evictions: int = 0  # of those, neurons still used within the window (cap below the window's needs)

    def summary(self) -> dict[str, float]:
        """Totals plus per-token figures and the mean read size."""
        tokens = max(self.tokens, 1)
        requested = self.hits + self.misses
        return {**asdict(self),
                "bytes_read_per_token": self.bytes_read / tokens,
                "reads_per_token": self.reads_issued / tokens,
                "mean_read_bytes": self.bytes_read / self.reads_issued if self.reads_issued else 0.0,
                "hit_rate": self.hits / requested if requested else 0.0}


class TokenClock:
    """Counts tokens from the order of layer calls (see the module docstring)."""

    def __init__(self) -> None:
        self.token = 0
        self.previous_layer: int | None = None

    def tick(self, layer: int) -> bool:
        """Record a call for `layer`; True when it starts a new token."""
        starts = self.previous_layer is None or layer <= self.previous_layer
        self.previous_layer = layer
        if starts:
            self.token += 1
        return starts
