"""Sparse FFN decoding: compute only the FFN neurons a token uses, on an OpenELM's KV-cache path.

For a gated FFN out = (act(h W_g^T) * (h W_u^T)) W_d^T, a neuron whose activation is zero adds
nothing, so with the active set A known the FFN is act(h W_g[A]^T) * (h W_u[A]^T) @ W_d[:, A]^T:
3 |A| D multiply-adds and 3 |A| D weights read instead of 3 F D. Two parts stay apart:

- an `ActiveSetSource` says which neurons: `active(layer, h [B, S, D]) -> mask [B, S, F]` (bool),
  or None for "all of them". `TruePattern` reads it off the gate (an oracle: it computes the
  whole gate projection, so it only shows the ceiling); `AllActive` is the dense control;
  predictor.py's `PredictedPattern` guesses it from h with a low-rank network, before the FFN.
- a `RowProvider` (provider.py) says where the active neurons' weights come from.

With several tokens at once (prefill, a batch) the neurons any token uses are gathered once and
each token's own mask zeroes the rest, so each token still sees exactly its own active set.
When every neuron is active the model's own dense FFN runs instead of a full gather: identical
results (the test's "all predicted active equals dense exactly") and no copy. With a
`FusedSparseFFN` (fused_ffn.py, numba), a single token's active neurons are computed in place
from a neuron-major bundle instead of gathered and multiplied; with a NeuronCache as the
provider, that bundle is the cache's own slot matrix (`resident_slots` loads what is missing and
names the slots), so weights read from disk are used where they landed.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from plugins.openelm.kernels import gated_activation
from plugins.openelm.model import OpenELM
from plugins.sparse.fused_ffn import FusedSparseFFN
from plugins.sparse.neuron_cache import NeuronCache
from plugins.sparse.provider import DramRowProvider, RowProvider


class ActiveSetSource(Protocol):
    """Which FFN neurons each token uses: mask [B, S, F] (True = compute it), None = every one."""

    def active(self, layer: int, hidden: torch.Tensor) -> torch.Tensor | None:
        ...


@runtime_checkable
class ListsActiveIds(Protocol):
    """A source that can also name one token's active neurons directly: hidden [1, 1, D] -> int64 [n]."""

    def active_ids(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        ...


class AllActive:
    """Every neuron, every token: the dense FFN."""

    def active(self, layer: int, hidden: torch.Tensor) -> torch.Tensor | None:
        return None


class TruePattern:
    """The exact active set of a relu model, read off its gate (gate > shift): an oracle."""

    def __init__(self, model: OpenELM) -> None:
        self.model = model

    def active(self, layer: int, hidden: torch.Tensor) -> torch.Tensor | None:
        ffn = self.model.layers[layer].ffn
        if ffn.activation == "silu":
            return None  # silu is never exactly zero: every neuron is active
        gate_rows = ffn.proj_1.weight[: ffn.proj_2.weight.shape[1]]  # [F, D]
        return torch.nn.functional.linear(hidden, gate_rows) > ffn.shift  # [B, S, F]


def ffn_released(model: OpenELM) -> bool:
    """Whether the model's own FFN weights were released (decoder.release_ffn_weights: a bundle serves them)."""
    return model.layers[0].ffn.proj_2.weight.is_meta


class SparseFFN:
    """The FFN step of sparse decoding (an OpenELM FFNStep): active rows only.

    Counts the neurons whose rows it gathered (`neurons_read`) and the FFN calls, so a benchmark
    can report bytes read per token. With `fused`, one-token steps run the fused kernel on its
    bundles (the provider then serves only steps of several tokens: prefills, batches); when the
    provider is a NeuronCache, `fused` must be its `FusedSparseFFN.from_cache`, called with slots.
    """

    def __init__(self, model: OpenELM, source: ActiveSetSource, provider: RowProvider | None = None,
                 fused: FusedSparseFFN | None = None) -> None:
        self.model = model
        self.source = source
        if provider is None:  # with the fused kernel, its bundles already hold the down columns as rows
            provider = DramRowProvider.from_layers(model.layers, fused.down_rows() if fused is not None else None)
        self.provider = provider
        self.fused = fused
        self.reads_slots = fused is not None and isinstance(provider, NeuronCache)
        self.lists_ids = isinstance(source, ListsActiveIds)  # checked once: a Protocol check is not free per call
        self.neurons_read = 0
        self.dense_calls = 0

    def __call__(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [B, S, D] (the normed FFN input) -> the FFN output [B, S, D]."""
        ffn = self.model.layers[layer].ffn
        if self.fused is not None and hidden.shape[0] * hidden.shape[1] == 1:
            return self._one_token(layer, hidden)
        mask = self.source.active(layer, hidden)  # [B, S, F] or None
        if mask is None or (bool(mask.all()) and not ffn_released(self.model)):
            self.dense_calls += 1
            return ffn.step(hidden)
        used = mask.flatten(0, -2).any(dim=0)  # [F]: neurons some token needs
        neuron_ids = used.nonzero().squeeze(1)  # [n]
        self.neurons_read += neuron_ids.numel()
        gate_up_rows, down_rows = self.provider.rows(layer, neuron_ids)  # [2n, D], [n, D]
        projected = torch.nn.functional.linear(hidden, gate_up_rows)  # [B, S, 2n] = [gate | up]
        activations = gated_activation(projected, ffn.activation, ffn.shift, inference=True)  # [B, S, n]
        if hidden.shape[0] * hidden.shape[1] > 1:  # each token keeps only its own neurons
            activations = activations * mask.index_select(-1, neuron_ids)
        return activations @ down_rows  # [B, S, D]

    def _one_token(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [1, 1, D] through the fused kernel: the fewest torch calls per layer (they cost at batch 1)."""
        if self.lists_ids:
            neuron_ids = self.source.active_ids(layer, hidden)  # [n]
        else:
            mask = self.source.active(layer, hidden)  # [1, 1, F] or None
            if mask is None:
                self.dense_calls += 1
                return self.model.layers[layer].ffn.step(hidden)
            neuron_ids = mask.view(-1).nonzero().view(-1)  # [n]
        if neuron_ids.numel() == self.provider.ffn_dim(layer) and not ffn_released(self.model):
            self.dense_calls += 1  # every neuron: the dense FFN, exactly
            return self.model.layers[layer].ffn.step(hidden)
        self.neurons_read += neuron_ids.numel()
        if self.reads_slots:  # the cache's slot matrix is the bundle: compute where the rows were read to
            return self.fused(layer, hidden, self.provider.resident_slots(layer, neuron_ids))  # [1, 1, D]
        return self.fused(layer, hidden, neuron_ids)  # [1, 1, D]


class SparseOpenELM(nn.Module):
    """An OpenELM that decodes with a SparseFFN: `make_cache` / `forward_step` as OpenELM's.

    `forward(input_ids)` runs the same sparse path over a whole sequence (a prefill into a fresh
    cache), so validation loss is measured on the path that is timed. Samplers that take
    OpenELM's cached-decoding interface (plugins.lm.sampling) take this model unchanged.
    """

    def __init__(self, model: OpenELM, source: ActiveSetSource, provider: RowProvider | None = None,
                 fused: FusedSparseFFN | None = None) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.sparse_ffn = SparseFFN(model, source, provider, fused)

    def make_cache(self, batch_size: int, max_length: int, device=None, dtype: torch.dtype | None = None):
        return self.model.make_cache(batch_size, max_length, device, dtype)

    @torch.no_grad()
    def forward_step(self, input_ids: torch.Tensor, cache, attention_mask: torch.Tensor | None = None,
                     last_only: bool = False) -> torch.Tensor:
        return self.model.forward_step(input_ids, cache, attention_mask, last_only, ffn_step=self.sparse_ffn)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits [B, S, V] of the sparse path for input_ids [B, S]."""
        cache = self.make_cache(input_ids.shape[0], input_ids.shape[1])
        return self.forward_step(input_ids, cache)
