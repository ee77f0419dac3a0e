"""Tiny OpenELMs shared by the sparse tests (3 layers, width 64: milliseconds per forward)."""

from __future__ import annotations

import torch

from plugins.openelm.config import OpenELMConfig
from plugins.openelm.model import OpenELM

TINY = dict(vocab_size=64, num_layers=3, model_dim=64, head_dim=16, ffn_dim_divisor=64, max_context_length=48)


def tiny_openelm(seed: int = 0, **options) -> OpenELM:
    """A randomly initialised tiny OpenELM in eval mode; `options` are OpenELMConfig fields."""
    torch.manual_seed(seed)
    return OpenELM(OpenELMConfig(**TINY, **options)).eval()


def prompt(length: int = 7, batch: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, TINY["vocab_size"], (batch, length), generator=torch.Generator().manual_seed(seed))
