"""Activation statistics of an OpenELM's FFNs: how sparse relufication made them.

Per layer, from the FFN activations act(gate) * up [N, S, F] of N sequences of S tokens:
- activation sparsity: the fraction of activations exactly zero;
- aggregated sparsity over a window of k tokens: the fraction of neurons that none of the last k
  tokens used (counted at every position with k tokens behind it), what "LLM in a flash"'s
  windowing and ReLU Strikes Back's aggregated sparsity rest on: the smaller the union of recent
  active sets, the less a decoder loads per token;
- FFN FLOPs per token, dense (6 F D: the gate, up and down matmuls at 2 FLOPs a multiply-add)
  and sparse (6 D times the active neurons), and the share of the whole forward pass saved;
- with relu_after_norm (stage 2), the FFN input's sparsity (zeros after the norm's relu).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from plugins.openelm.model import OpenELM

IGNORE_INDEX = -100  # labels the loss skips (the lm plugin's convention)


@torch.no_grad()
def record_ffn(model: OpenELM, input_ids: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """One dense forward over input_ids [N, S]: per layer the FFN inputs [N, S, D] and the
    activations [N, S, F], and the logits [N, S, V] (float32)."""
    inputs: list[torch.Tensor] = []
    activations: list[torch.Tensor] = []

    def keep(module, arguments, output) -> None:
        hidden = arguments[0]
        inputs.append(hidden.float())
        activations.append(module.intermediate(hidden, inference=True).float())

    handles = [layer.ffn.register_forward_hook(keep) for layer in model.layers]
    try:
        model.eval()
        logits = model(input_ids)
    finally:
        for handle in handles:
            handle.remove()
    return inputs, activations, logits


def aggregated_sparsity(active: torch.Tensor, window: int) -> float | None:
    """Fraction of neurons unused by all of the last `window` tokens, over every position t >= window - 1.

    active [N, S, F] bool. None when the sequences are shorter than the window.
    """
    if active.shape[1] < window:
        return None
    counts = F.pad(active.to(torch.int32).cumsum(dim=1), (0, 0, 1, 0))  # [N, S + 1, F], counts[:, 0] = 0
    used = (counts[:, window:] - counts[:, :-window]) > 0  # [N, S - window + 1, F]: used in (t - window, t]
    return 1.0 - used.float().mean().item()


def validation_loss(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean next-token cross-entropy (nats) of logits [N, S, V] against labels [N, S]."""
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX).item()


def layer_statistics(model: OpenELM, inputs: list[torch.Tensor], activations: list[torch.Tensor],
                     windows: list[int]) -> list[dict[str, Any]]:
    """One dict per layer: sparsities, aggregated sparsity per window, FFN FLOPs per token."""
    rows = []
    for index, (hidden, activation) in enumerate(zip(inputs, activations)):
        ffn_dim, model_dim = activation.shape[-1], hidden.shape[-1]
        active = activation != 0  # [N, S, F]
        mean_active = active.float().sum(-1).mean().item()  # neurons per token
        row = {
            "layer": index,
            "ffn_dim": ffn_dim,
            "activation_sparsity": 1.0 - active.float().mean().item(),
            "active_neurons_per_token": mean_active,
            "aggregated_sparsity": {str(k): aggregated_sparsity(active, k) for k in windows},
            "ffn_flops_dense": 6 * model_dim * ffn_dim,
            "ffn_flops_sparse": 6 * model_dim * mean_active,
        }
        if model.config.relu_after_norm:
            row["ffn_input_sparsity"] = (hidden == 0).float().mean().item()
        rows.append(row)
    return rows


def summarize(model: OpenELM, layers: list[dict[str, Any]], sequence_length: int) -> dict[str, Any]:
    """Whole-model totals of the per-layer rows: FFN FLOPs per token and the share of a forward pass saved."""
    dense = sum(row["ffn_flops_dense"] for row in layers)
    sparse = sum(row["ffn_flops_sparse"] for row in layers)
    forward = model.flops_per_token(sequence_length) / 3  # training FLOPs are 3x the forward's
    total_neurons = sum(row["ffn_dim"] for row in layers)
    return {
        "activation_sparsity": 1.0 - sum(row["active_neurons_per_token"] for row in layers) / total_neurons,
        "ffn_flops_per_token_dense": dense,
        "ffn_flops_per_token_sparse": sparse,
        "ffn_flops_saved_fraction": 1.0 - sparse / dense,
        "forward_flops_per_token": forward,
        "forward_flops_saved_fraction": (dense - sparse) / forward,
    }
