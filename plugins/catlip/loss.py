"""The `catlip_bce` loss: binary cross-entropy with logits over a multi-hot synset target.

As in CatLIP: summed over classes, averaged over the batch, always computed in fp32 (also under
bf16 autocast) because the sum over tens of thousands of classes loses precision in bf16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class CatLIPBCEConfig:
    """The `loss:` section for `name: catlip_bce` (no options yet)."""


class CatLIPBCELoss(nn.Module):
    """loss = sum_{b, c} BCEWithLogits(logits[b, c], target[b, c]) / B."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        batch_size = logits.shape[0]  # logits, target: [B, C]
        with torch.autocast(device_type=logits.device.type, enabled=False):
            per_element = F.binary_cross_entropy_with_logits(
                logits.float(), target.float(), reduction="none"
            )  # [B, C]
            return per_element.sum() / batch_size


def build_catlip_bce(config: CatLIPBCEConfig | None = None) -> CatLIPBCELoss:
    return CatLIPBCELoss()
