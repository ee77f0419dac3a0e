"""The `multilabel_classification` task: {"images": [B, 3, H, W], "labels": [B, C]} -> loss.

The model contract is `model(images) -> logits [B, C]`; the labels are float multi-hot over the
synset vocabulary. The loss defaults to `catlip_bce`. When the batch carries `captions`, only that
many rows are real: validation pads the last batch so every rank runs the same shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from plugins.catlip.loss import CatLIPBCELoss
from toolkit.errors import DataError
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
        if logits.shape[-1] != labels.shape[-1]:
            raise DataError(f"the model's head has {logits.shape[-1]} classes but the synset vocabulary has "
                            f"{labels.shape[-1]}", hint=f"set model.num_classes to {labels.shape[-1]} "
                            "(or data.top_k to the head size when the vocabulary is built)")
        rows = len(batch.get("captions", labels))
        if rows == 0:  # this rank's share of the last validation batch is all padding
            return StepOutput(loss=logits.sum() * 0.0, items=0)
        logits, labels = logits[:rows], labels[:rows]
        loss = self.loss(logits, labels)
        positives = labels.detach().float().sum(dim=1)  # [rows]
        predicted = logits.detach() > 0  # [rows, C]
        true_positives = (predicted & (labels > 0.5)).sum().float()
        metrics = {
            "mean_positives": positives.mean(),
            "empty_label_fraction": (positives == 0).float().mean(),
            # Micro-averaged precision and recall of the labels at probability 0.5.
            "precision": true_positives / predicted.sum().clamp(min=1),
            "recall": true_positives / positives.sum().clamp(min=1),
        }
        return StepOutput(loss=loss, items=rows, metrics=metrics)

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        return self._step(model, batch)

    def validation_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        return self._step(model, batch)


def build_multilabel_classification(config: MultiLabelClassificationConfig | None,
                                    loss: Callable[..., Any] | None) -> MultiLabelClassificationTask:
    return MultiLabelClassificationTask(config, loss)
