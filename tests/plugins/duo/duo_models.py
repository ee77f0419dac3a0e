"""Tiny Duo models shared by the duo tests (3 layers, width 64: milliseconds per forward)."""

from __future__ import annotations

import torch

from plugins.duo.model import DuoConfig, DuoOpenELM
from plugins.duo.routers import FixedRouter

TINY = dict(vocab_size=64, num_layers=3, model_dim=64, head_dim=16, ffn_dim_divisor=64, max_context_length=48,
            small_ffn_ratio=4)


def tiny_duo(router: str = "random", **options) -> DuoOpenELM:
    torch.manual_seed(0)
    return DuoOpenELM(DuoConfig(**TINY, router=router, router_options=options)).eval()


def route_all(model: DuoOpenELM, choice: str) -> DuoOpenELM:
    model.set_router(FixedRouter([choice] * model.config.num_layers))
    return model
