"""Where an FFN neuron's weights come from: the row-provider interface and its in-DRAM implementation.

Sparse decoding splits two decisions. *Which* neurons a token needs is the active-set source's
(the true ReLU pattern, or a low-rank predictor: predictor.py); *where* their weights are read
from is a `RowProvider`'s. A neuron i of a gated FFN owns three vectors of length D (model width):
row i of the gate projection, row i of the up projection (rows i and F + i of OpenELM's fused
`proj_1.weight` [2F, D]) and column i of the down projection (`proj_2.weight[:, i]`, stored here
as a row of its transpose). Those three are what "LLM in a flash" bundles together on disk, so a
provider hands them out per neuron:

    rows(layer, neuron_ids) -> (gate_up_rows, down_rows)
        layer       int, the block index
        neuron_ids  int64 [n], distinct neuron indices in [0, F_layer), in the order wanted
        gate_up_rows  [2n, D]: the n gate rows (in neuron_ids order), then the n up rows
        down_rows     [n, D]: down-projection column of each neuron, as a row

so `F.linear(h, gate_up_rows)` is the fused [gate | up] of the active neurons and
`act(gate) * up @ down_rows` their contribution to the FFN output. Any implementation (a
memory-mapped row-column-bundled file with a DRAM cache, say) plugs into SparseFFN unchanged;
the tensors it returns may be reused buffers, valid until its next `rows` call.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class RowProvider(Protocol):
    """Hands out the weights of chosen FFN neurons (see the module docstring for shapes)."""

    def rows(self, layer: int, neuron_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ...

    def ffn_dim(self, layer: int) -> int:
        """F, the number of neurons of `layer`'s FFN."""
        ...


class DramRowProvider:
    """Rows gathered from the model's own weights in memory, into preallocated buffers.

    The fused `proj_1.weight` [2F, D] is already neuron-major (gate row i, up row F + i), so its
    rows are gathered in place, in one index_select. The down projection [D, F] is copied once,
    transposed to [F, D], so that a neuron's down column is one contiguous row (gathering columns
    of the original would touch every cache line of it, reading all the bytes sparsity saves).
    The gathers write into buffers allocated once per layer at full size: a fresh allocation per
    token would be fresh pages from the OS, whose faults cost about as much as the copy itself.
    The returned tensors are views of those buffers, overwritten by the next `rows` call.
    """

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]],
                 down_rows: list[torch.Tensor] | None = None) -> None:
        """pairs: per layer (fused gate/up weight [2F, D], down-projection weight [D, F]); down_rows:
        the down columns already held as rows [F, D] elsewhere (the fused kernel's bundles), used
        instead of a transposed copy."""
        self.gate_up = [fused for fused, _ in pairs]  # [2F, D] each, shared with the model
        self.down = down_rows if down_rows is not None else [down.t().contiguous() for _, down in pairs]  # [F, D]
        self.gate_up_buffers = [torch.empty_like(fused) for fused in self.gate_up]  # [2F, D]
        self.down_buffers = [torch.empty(down.shape, dtype=down.dtype) for down in self.down]  # [F, D], contiguous

    @classmethod
    def from_layers(cls, layers: nn.ModuleList, down_rows: list[torch.Tensor] | None = None) -> DramRowProvider:
        """The provider of an OpenELM's blocks (`model.layers`)."""
        return cls([(layer.ffn.proj_1.weight.detach(), layer.ffn.proj_2.weight.detach()) for layer in layers],
                   down_rows)

    def ffn_dim(self, layer: int) -> int:
        return self.down[layer].shape[0]

    def rows(self, layer: int, neuron_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = neuron_ids.numel()
        both = torch.cat((neuron_ids, neuron_ids + self.ffn_dim(layer)))  # [2n]: gate rows, then up rows
        gate_up = torch.index_select(self.gate_up[layer], 0, both, out=self.gate_up_buffers[layer][: 2 * count])
        down = torch.index_select(self.down[layer], 0, neuron_ids, out=self.down_buffers[layer][:count])
        return gate_up, down  # [2n, D], [n, D]

    def bytes_per_neuron(self, layer: int) -> int:
        """Bytes of one neuron's three vectors: what reading it costs."""
        return 3 * self.down[layer].shape[1] * self.down[layer].element_size()
