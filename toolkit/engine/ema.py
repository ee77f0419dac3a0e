"""Exponential moving average of a model's floating-point weights (CatLIP uses decay 5e-4 per step)."""

from __future__ import annotations

import torch
from torch import nn


class ExponentialMovingAverage:
    """Keeps `ema = ema + rate * (weights - ema)` after each optimizer step.

    `rate` is the recipe's `trainer.ema_decay`, read as CoreNet does: the weight the newest model
    gets (5e-4 in CatLIP), so the average spans about 1/rate steps.
    """

    def __init__(self, model: nn.Module, rate: float) -> None:
        self.rate = rate
        self.shadow = {
            name: tensor.detach().clone().float()
            for name, tensor in model.state_dict().items()
            if tensor.is_floating_point()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, tensor in model.state_dict().items():
            if name in self.shadow:
                self.shadow[name].lerp_(tensor.detach().float(), self.rate)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in self.shadow:
            if name in state:
                self.shadow[name].copy_(state[name])
