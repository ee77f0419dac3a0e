"""A preallocated key/value cache for OpenELM decoding, one buffer pair per layer.

OpenELM's layers differ in KV heads, so layer i gets its own keys and values [B, K_i, S_max, E].
All rows share one write cursor (`length`): a batch of prompts of different lengths is LEFT padded,
so every row's newest token sits in the same slot. `valid` [B, S_max] marks the slots holding real
tokens (padding is never attended), and `next_position` [B] is each row's next RoPE position, so
positions start at 0 on each row's first real token whatever its padding.

    cache = model.make_cache(batch_size=4, max_length=prompt_len + new_tokens)
    logits = model.forward_step(prompt_ids, cache, attention_mask=prompt_mask)  # prefill
    logits = model.forward_step(next_ids[:, None], cache)                       # one token a step
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer for up to `max_length` positions of `batch_size` rows."""

    def __init__(
        self,
        kv_heads: list[int],
        batch_size: int,
        max_length: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if batch_size <= 0 or max_length <= 0:
            raise ValueError(f"batch_size and max_length must be positive, got {batch_size}, {max_length}")
        self.batch_size = batch_size
        self.max_length = max_length
        self.keys = [torch.zeros(batch_size, k, max_length, head_dim, device=device, dtype=dtype) for k in kv_heads]
        self.values = [torch.zeros_like(keys) for keys in self.keys]
        self.valid = torch.zeros(batch_size, max_length, dtype=torch.bool, device=device)  # [B, S_max]
        self.next_position = torch.zeros(batch_size, dtype=torch.long, device=device)  # [B]
        self.length = 0  # slots written so far, the same for every row
        self.padded = False  # whether any written slot is padding (then attention needs a mask)

    @property
    def num_layers(self) -> int:
        return len(self.keys)

    def reset(self) -> None:
        """Forget everything written (the buffers are reused)."""
        self.valid.zero_()
        self.next_position.zero_()
        self.length = 0
        self.padded = False

    def begin(self, attention_mask: torch.Tensor | None, seq: int) -> torch.Tensor:
        """Reserve `seq` slots for the next input and return its RoPE positions [B, seq].

        `attention_mask` [B, seq] (1 = real token, 0 = padding) marks the new tokens; None means
        all real. Padding gets position 0 (its output is never used or attended).
        """
        start, end = self.length, self.length + seq
        if end > self.max_length:
            raise ValueError(f"KV cache holds {self.max_length} positions; {start} used, {seq} more asked")
        if attention_mask is None:
            self.valid[:, start:end] = True
            positions = self.next_position[:, None] + torch.arange(seq, device=self.valid.device)  # [B, seq]
            self.next_position += seq
            return positions
        if attention_mask.shape != (self.batch_size, seq):
            raise ValueError(f"attention_mask must be [{self.batch_size}, {seq}], got {tuple(attention_mask.shape)}")
        real = attention_mask.to(device=self.valid.device, dtype=torch.bool)
        if not bool(real.all()):
            self.padded = True
        self.valid[:, start:end] = real
        positions = self.next_position[:, None] + real.long().cumsum(dim=1) - 1  # [B, seq]
        positions = positions.clamp_min(0)
        self.next_position += real.sum(dim=1)
        return positions

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, K, seq, E] at the reserved slots; return all keys, values so far [B, K, L, E]."""
        seq = k.shape[2]
        start, end = self.length, self.length + seq
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def attention_mask(self, seq: int) -> torch.Tensor | None:
        """Boolean mask [B, 1, seq, L] for queries at the reserved slots (True = may attend), or None.

        None when no slot is padding and `seq` is 1 (the new token may see everything). Otherwise
        causal plus padding; each query may always see its own slot, so a padding query's softmax
        has something to normalise (its output is discarded).
        """
        start, end = self.length, self.length + seq
        if not self.padded and seq == 1:
            return None
        device = self.valid.device
        query_slots = torch.arange(start, end, device=device)[:, None]  # [seq, 1]
        key_slots = torch.arange(end, device=device)[None, :]  # [1, L]
        causal = key_slots <= query_slots  # [seq, L]
        allowed = causal[None] & self.valid[:, None, :end]  # [B, seq, L]
        allowed |= (key_slots == query_slots)[None]
        return allowed[:, None]  # [B, 1, seq, L]

    def advance(self, seq: int) -> None:
        """Mark the reserved slots as written (called once all layers have written them)."""
        self.length += seq
