"""Exponential moving average of a model's floating-point weights, in the usual convention.

After each optimizer step: ema = decay * ema + (1 - decay) * weights. `decay` is the weight of the
old average (timm's ModelEmaV2 and torch.optim.swa_utils.get_ema_multi_avg_fn use the same), so
the average spans about 1 / (1 - decay) steps: CatLIP's "momentum 5e-4" is `ema_decay: 0.9995`.
Under FSDP2 the averages are kept as the shards the model holds; `state_dict` gathers them whole
(a collective: every rank calls it) and `load_state_dict` takes whole tensors back.
"""

from __future__ import annotations

import torch
from torch import nn


class ExponentialMovingAverage:
    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {
            name: tensor.detach().clone().float()
            for name, tensor in model.state_dict().items()
            if tensor.is_floating_point()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        current = model.state_dict()
        names = [name for name in current if name in self.shadow]
        averages = [self.shadow[name] for name in names]
        weights = [current[name].detach().float() for name in names]
        # lerp_(w, 1 - decay): ema + (1 - decay) * (w - ema) = decay * ema + (1 - decay) * w
        torch._foreach_lerp_(averages, weights, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        from toolkit.engine.state import gather_full  # FSDP2 shards -> whole tensors

        return gather_full(dict(self.shadow))

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        from torch.distributed.tensor import DTensor, distribute_tensor

        for name, average in self.shadow.items():
            if name not in state:
                continue
            whole = state[name].to(average.device if not isinstance(average, DTensor) else average.to_local().device)
            if isinstance(average, DTensor):  # take this rank's shard of the whole tensor
                whole = distribute_tensor(whole.float(), average.device_mesh, average.placements)
            average.copy_(whole)
