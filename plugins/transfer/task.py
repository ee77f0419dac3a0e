"""The `classification` task: {"images": [B, 3, H, W], "targets": [B] int64} -> cross-entropy + accuracy.

The model contract is `model(images) -> logits [B, C]`. Rows whose target is -100 are padding
(validation pads its last batch so every rank runs the same shapes): they add neither loss, nor
items, nor accuracy. The loss is cross-entropy (with optional label smoothing) unless the recipe
names a `loss` component, which is then called as `loss(logits, targets)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.errors import DataError
from toolkit.task import StepOutput

PADDING_TARGET = -100


@dataclass
class ClassificationConfig:
    """The `task:` section for `name: classification`."""

    label_smoothing: float = 0.0  # training loss only; validation reports plain cross-entropy

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


class ClassificationTask:
    """Single-label classification: cross-entropy loss, accuracy metric."""

    item_unit = "images"  # the engine reports images/s

    def __init__(self, config: ClassificationConfig | None = None, loss: Callable[..., Any] | None = None) -> None:
        self.config = config or ClassificationConfig()
        self.loss = loss

    def _step(self, model: nn.Module, batch: dict[str, torch.Tensor], label_smoothing: float) -> StepOutput:
        images, targets = batch["images"], batch["targets"]  # [B, 3, H, W], [B]
        expected = getattr(getattr(model, "module", model), "image_size", None)
        if expected is not None and tuple(images.shape[-2:]) != (expected, expected):
            raise DataError(f"the data's images are {tuple(images.shape[-2:])} but the model expects "
                            f"({expected}, {expected})", hint=f"set data.image_size to {expected}")
        logits = model(images)  # [B, C]
        valid = targets != PADDING_TARGET  # [B]
        if targets[valid].numel() and int(targets[valid].max()) >= logits.shape[-1]:
            raise DataError(f"a target is class {int(targets[valid].max())} but the model's head has "
                            f"{logits.shape[-1]} classes", hint="set model.class_names to the dataset's classes")
        items = int(valid.sum())
        if items == 0:  # this rank's share of the last validation batch is all padding
            return StepOutput(loss=logits.sum() * 0.0, items=0, metrics={"accuracy": torch.zeros(())})
        logits, targets = logits[valid], targets[valid]  # [N, C], [N]
        if self.loss is not None:
            loss = self.loss(logits, targets)
        else:
            loss = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
        accuracy = (logits.detach().argmax(dim=-1) == targets).float().mean()
        return StepOutput(loss=loss, items=items, metrics={"accuracy": accuracy})

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        return self._step(model, batch, self.config.label_smoothing)

    def validation_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        return self._step(model, batch, 0.0)


def build_classification(config: ClassificationConfig | None, loss: Callable[..., Any] | None) -> ClassificationTask:
    return ClassificationTask(config, loss)
