"""The `multilabel_classification` task: {"images": [B, 3, H, W], "labels": [B, C]} -> loss.

The model contract is `model(images) -> logits [B, C]`; the labels are float multi-hot over the
synset vocabulary. The loss defaults to `catlip_bce`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from plugins.catlip.loss import CatLIPBCELoss
from toolkit.task import StepOutput


@dataclass
class MultiLabelClassificationConfig:
    """The `task:` section for `name: multilabel_classification` (no options yet)."""


class MultiLabelClassificationTask:
    """Turns (model, batch) into the multi-label loss plus label statistics."""

    item_unit = "images"  # the engine reports images/s

    def __init__(self, config: MultiLabelClassificationConfig | None = None,
                 loss: Callable[..., Any] | None = None) -> None:
        self.config = config or MultiLabelClassificationConfig()
        self.loss = loss if loss is not None else CatLIPBCELoss()

    def _step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        images, labels = batch["images"], batch["labels"]  # [B, 3, H, W], [B, C]
        logits = model(images)  # [B, C]
        loss = self.loss(logits, labels)
        positives = labels.detach().float().sum(dim=1)  # [B]
        metrics = {
            "mean_positives": positives.mean(),
            "empty_label_fraction": (positives == 0).float().mean(),
        }
        return StepOutput(loss=loss, items=images.shape[0], metrics=metrics)

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        return self._step(model, batch)

    def validation_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        return self._step(model, batch)


def build_multilabel_classification(config: MultiLabelClassificationConfig | None,
                                    loss: Callable[..., Any] | None) -> MultiLabelClassificationTask:
    return MultiLabelClassificationTask(config, loss)
