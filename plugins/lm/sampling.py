"""Autoregressive sampling for any model with the causal-LM contract `model(ids [B, T]) -> [B, T, V]`.

A model that offers a KV cache (`make_cache(batch_size, max_length)` and
`forward_step(ids, cache, attention_mask=None, last_only=False)`, as OpenELM does) is prefilled once
and then fed one token per step; a left-padded batch (`attention_mask`) needs such a model. Any
other model, or a run longer than the model's context, reruns the (cropped) context every step.
`generate_text` adds tokenisation, batching of prompts of any lengths, stop strings and EOS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def supports_kv_cache(model: nn.Module) -> bool:
    """Whether `model` offers the cached-decoding interface (duck-typed)."""
    return callable(getattr(model, "make_cache", None)) and callable(getattr(model, "forward_step", None))


def next_tokens(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The next token of each row [B] from logits [B, V]: argmax at temperature 0, else a draw."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probabilities = filter_logits(logits / temperature, top_k, top_p).softmax(dim=-1)  # [B, V]
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)


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
    *,
    attention_mask: torch.Tensor | None = None,
    use_cache: bool = True,
    on_tokens: Callable[[torch.Tensor], None] | None = None,
    is_finished: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """`input_ids` [B, T] extended by up to `max_new_tokens` tokens: [B, T + n].

    temperature 0 picks the most likely token (greedy, deterministic); otherwise tokens are drawn
    from softmax(logits / temperature) restricted by top_k / top_p, using `generator` (on the
    model's device) for reproducible draws. A row that produced `eos_id` keeps producing it, and
    generation stops early once every row has. The model's train/eval mode is left as it was.

    Keyword-only extras: `attention_mask` [B, T] (1 = token, 0 = padding) for LEFT-padded prompts
    (needs a model with a KV cache); `use_cache=False` forces the full-recompute loop;
    `on_tokens(next_ids [B])` is called after every step (streaming); `is_finished(new_ids [B, n])`
    may return a bool [B] of rows to treat as finished (e.g. a stop string appeared): they are then
    held at `eos_id` when one is given, and generation stops once every row is finished.
    """
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be [batch, length>=1], got shape {tuple(input_ids.shape)}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask must have input_ids' shape {tuple(input_ids.shape)}, "
                         f"got {tuple(attention_mask.shape)}")
    padded = attention_mask is not None and not bool(attention_mask.bool().all())
    context_limit = max_context_length(model)
    total_length = input_ids.shape[1] + max_new_tokens
    cached = (use_cache and supports_kv_cache(model) and max_new_tokens > 0
              and (context_limit is None or total_length <= context_limit))
    if padded and not cached:
        raise ValueError("left-padded prompts need a model with a KV cache (make_cache/forward_step) and "
                         "prompt + new tokens within its context; run the rows one at a time instead")
    sequences = input_ids
    batch = input_ids.shape[0]
    finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)  # [B]
    cache = model.make_cache(batch, total_length) if cached else None
    step_input = input_ids
    for step in range(max_new_tokens):
        if cache is not None:
            mask = attention_mask if step == 0 else None
            logits = model.forward_step(step_input, cache, attention_mask=mask, last_only=True)[:, -1, :].float()
        else:
            context = sequences if context_limit is None else sequences[:, -context_limit:]  # [B, <=L]
            logits = model(context)[:, -1, :].float()  # [B, V]
        next_ids = next_tokens(logits, temperature, top_k, top_p, generator)  # [B]
        if eos_id is not None:
            next_ids = torch.where(finished, torch.full_like(next_ids, eos_id), next_ids)
            finished |= next_ids == eos_id
        sequences = torch.cat([sequences, next_ids.unsqueeze(1)], dim=1)  # [B, T + step]
        step_input = next_ids.unsqueeze(1)  # [B, 1]
        if on_tokens is not None:
            on_tokens(next_ids)
        if is_finished is not None:
            finished |= is_finished(sequences[:, input_ids.shape[1]:]).to(finished.device)
        if (eos_id is not None or is_finished is not None) and bool(finished.all()):
            break
    return sequences


def _tokenizer_eos(tokenizer) -> int | None:
    for attribute in ("eos_id", "eos_token_id"):
        value = getattr(tokenizer, attribute, None)
        if isinstance(value, int) and value >= 0:
            return value
    return None


def cut_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """`text` up to the earliest occurrence of any stop string, and whether one occurred."""
    cut = len(text)
    for marker in stop or ():
        if marker:
            index = text.find(marker)
            if 0 <= index < cut:
                cut = index
    return text[:cut], cut < len(text)


def _model_device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


@torch.no_grad()
def generate_text(
    model: nn.Module,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop: list[str] | None = None,
    batch_size: int = 16,
    generator: torch.Generator | None = None,
    prefix_ids: Sequence[int] = (),
) -> list[str]:
    """The continuation of each prompt, cut before the first stop string and at EOS, in prompt order.

    `tokenizer` needs `encode(text) -> ids`, `decode(ids) -> text` and an `eos_id` (or
    `eos_token_id`); `prefix_ids` go before every prompt's tokens (e.g. a BOS or document-start id).
    Prompts are sorted by length and run `batch_size` at a time, LEFT padded, when the model has a
    KV cache; otherwise only prompts of equal token length share a batch. Every row stops at EOS
    or a stop string; a batch stops when all its rows have.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    eos_id = _tokenizer_eos(tokenizer)
    pad_id = eos_id if eos_id is not None else 0
    encoded = [list(prefix_ids) + list(tokenizer.encode(prompt)) for prompt in prompts]
    for index, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {index} encodes to no tokens; give prefix_ids (e.g. the EOS/BOS id)")
    device = _model_device(model)
    # Left padding needs the cache; so does a batch of unequal lengths (else equal lengths only).
    limit = max_context_length(model)
    longest = max((len(ids) for ids in encoded), default=0)
    cached = supports_kv_cache(model) and (limit is None or longest + max_new_tokens <= limit)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    batches: list[list[int]] = []
    for index in order:
        last = batches[-1] if batches else None
        fits = last is not None and len(last) < batch_size and (cached or len(encoded[last[0]]) == len(encoded[index]))
        if fits:
            last.append(index)
        else:
            batches.append([index])
    results: list[str] = [""] * len(prompts)

    def decode_new(ids: list[int]) -> str:
        if eos_id is not None and eos_id in ids:
            ids = ids[:ids.index(eos_id)]
        return tokenizer.decode(ids)

    def stop_check(new_ids: torch.Tensor) -> torch.Tensor:
        rows = new_ids.tolist()
        return torch.tensor([cut_at_stop(decode_new(row), stop)[1] for row in rows], dtype=torch.bool)

    for members in batches:
        width = max(len(encoded[i]) for i in members)
        input_ids = torch.full((len(members), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(members), width), dtype=torch.long)
        for row, index in enumerate(members):
            ids = encoded[index]
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids):] = 1
        padded = not bool(attention_mask.bool().all())
        output = generate(
            model, input_ids.to(device), max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            eos_id=eos_id, generator=generator,
            attention_mask=attention_mask.to(device) if padded else None,
            is_finished=stop_check if stop else None,
        )
        for row, index in enumerate(members):
            results[index] = cut_at_stop(decode_new(output[row, width:].tolist()), stop)[0]
    return results
