"""Autoregressive sampling for any model with the causal-LM contract `model(ids [B, T]) -> [B, T, V]`.

No KV cache: each new token reruns the (cropped) context, which is simple and fine for the small
models and short samples this is for.
"""

from __future__ import annotations

import torch
from torch import nn

CONTEXT_LENGTH_ATTRIBUTES = ("max_context_length", "max_seq_len", "block_size", "max_position_embeddings")


def max_context_length(model: nn.Module) -> int | None:
    """The longest input the model takes, if its config says (e.g. OpenELM's max_context_length)."""
    model = getattr(model, "module", model)
    for holder in (getattr(model, "config", None), model):
        for attribute in CONTEXT_LENGTH_ATTRIBUTES:
            value = getattr(holder, attribute, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Logits [B, V] with tokens outside the top-k and outside the top-p nucleus set to -inf."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, sorted_ids = torch.sort(logits, dim=-1, descending=True)  # [B, V]
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # [B, V]
        # Drop a token when the tokens before it already reach top_p; the first always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p  # [B, V]
        drop = drop_sorted.scatter(1, sorted_ids, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`input_ids` [B, T] extended by up to `max_new_tokens` tokens: [B, T + n].

    temperature 0 picks the most likely token (greedy, deterministic); otherwise tokens are drawn
    from softmax(logits / temperature) restricted by top_k / top_p, using `generator` (on the
    model's device) for reproducible draws. A row that produced `eos_id` keeps producing it, and
    generation stops early once every row has. The model's train/eval mode is left as it was.
    """
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be [batch, length>=1], got shape {tuple(input_ids.shape)}")
    context_limit = max_context_length(model)
    sequences = input_ids
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # [B]
    for _ in range(max_new_tokens):
        context = sequences if context_limit is None else sequences[:, -context_limit:]  # [B, <=L]
        logits = model(context)[:, -1, :].float()  # [B, V]
        if temperature <= 0:
            next_ids = logits.argmax(dim=-1)  # [B]
        else:
            probabilities = filter_logits(logits / temperature, top_k, top_p).softmax(dim=-1)  # [B, V]
            next_ids = torch.multinomial(probabilities, 1, generator=generator).squeeze(1)  # [B]
        if eos_id is not None:
            next_ids = torch.where(finished, torch.full_like(next_ids, eos_id), next_ids)
            finished |= next_ids == eos_id
        sequences = torch.cat([sequences, next_ids.unsqueeze(1)], dim=1)  # [B, T + step]
        if eos_id is not None and bool(finished.all()):
            break
    return sequences
