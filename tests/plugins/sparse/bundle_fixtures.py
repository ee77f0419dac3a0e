"""A tiny two-layer OpenELM and the dense rows the FFN bundle tests compare against."""

from __future__ import annotations

import torch

from plugins.openelm.config import OpenELMConfig
from plugins.openelm.model import OpenELM


def tiny_model(ffn_dims=(24, 40)) -> OpenELM:
    """Two layers of width 16 with different FFN widths (layer-wise scaling's per-layer shapes)."""
    config = OpenELMConfig(vocab_size=32, max_context_length=16, num_layers=2, model_dim=16, head_dim=8,
                           num_query_heads=2, num_kv_heads=1, ffn_dim=ffn_dims[0])
    torch.manual_seed(0)
    model = OpenELM(config)
    model.layers[1].ffn.proj_1 = torch.nn.Linear(16, 2 * ffn_dims[1], bias=False)
    model.layers[1].ffn.proj_2 = torch.nn.Linear(ffn_dims[1], 16, bias=False)
    return model


def shapes(model: OpenELM) -> list[tuple[int, int]]:
    return [(layer.ffn.proj_2.weight.shape[0], layer.ffn.proj_2.weight.shape[1]) for layer in model.layers]


def expected_record(model: OpenELM, layer: int, neuron: int) -> torch.Tensor:
    """[3, D]: proj_1 row i (gate), proj_1 row F + i (up), proj_2 column i (down)."""
    gate_up, down = model.layers[layer].ffn.proj_1.weight.detach(), model.layers[layer].ffn.proj_2.weight.detach()
    ffn_dim = down.shape[1]
    return torch.stack([gate_up[neuron], gate_up[ffn_dim + neuron], down[:, neuron]])
