"""The `contrastive` task and the `clip` loss: CLIP's objective on the engine, through open_clip.

The task tokenises the batch's captions with open_clip's tokenizer (memoised: captions repeat
every epoch) and hands the model's normalised features to the loss. The loss is open_clip's
`ClipLoss`; under `torchrun` it gathers features from every rank, with `local_loss` (each rank
scores its own rows against all columns) and `gather_with_grad` (gradients flow back through the
gather) as open_clip trains at scale.

Validation ranks can hold different numbers of real rows (the last batch of the split is short, and
a rank may hold none), which `ClipLoss`'s all-gather cannot take. So a validation step always runs
the model on the full padded batch (model forwards are collectives under DDP and FSDP too),
gathers the real rows of every rank with `all_gather_rows`, and scores that whole batch as one
process would; the engine's item-weighted mean over ranks then gives exactly that loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from toolkit.engine.distributed import all_gather_rows
from toolkit.task import StepOutput


@dataclass
class ClipLossConfig:
    """The `loss:` section for `name: clip`."""

    local_loss: bool = True
    gather_with_grad: bool = True


class ClipLossFunction:
    """open_clip's ClipLoss, built on first use so it sees the job's rank and world size."""

    def __init__(self, config: ClipLossConfig | None = None) -> None:
        self.config = config or ClipLossConfig()
        self._loss = None
        self._whole_batch_loss = None

    def __call__(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor):
        if self._loss is None:
            from open_clip.loss import ClipLoss

            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if distributed else 0
            world_size = torch.distributed.get_world_size() if distributed else 1
            self._loss = ClipLoss(local_loss=self.config.local_loss, gather_with_grad=self.config.gather_with_grad,
                                  cache_labels=True, rank=rank, world_size=world_size)
        return self._loss(image_features.float(), text_features.float(), logit_scale.float())

    def whole_batch(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor):
        """The loss of rows already gathered from every rank, computed as one process would."""
        if self._whole_batch_loss is None:
            from open_clip.loss import ClipLoss

            self._whole_batch_loss = ClipLoss(cache_labels=True, rank=0, world_size=1)
        return self._whole_batch_loss(image_features.float(), text_features.float(), logit_scale.float())


@dataclass
class ContrastiveConfig:
    """The `task:` section for `name: contrastive`."""

    text_model: str = "ViT-S-32"  # open_clip tokenizer to use (match model.text_model)


class ContrastiveTask:
    """{"images": [B, 3, H, W], "captions": list[str]} -> CLIP loss, plus the logit scale."""

    item_unit = "images"

    def __init__(self, config: ContrastiveConfig | None = None, loss: Callable[..., Any] | None = None) -> None:
        self.config = config or ContrastiveConfig()
        self.loss = loss if loss is not None else ClipLossFunction()
        self._tokenizer = None
        self._tokens: dict[str, torch.Tensor] = {}

    def tokenize(self, captions: list[str]) -> torch.Tensor:
        """[B, context] token ids, each caption tokenised once per process."""
        missing = [caption for caption in dict.fromkeys(captions) if caption not in self._tokens]
        if missing:
            if self._tokenizer is None:
                import open_clip

                self._tokenizer = open_clip.get_tokenizer(self.config.text_model)
            for caption, row in zip(missing, self._tokenizer(missing)):
                self._tokens[caption] = row
        return torch.stack([self._tokens[caption] for caption in captions])

    def _step(self, model: nn.Module, batch: dict[str, Any]) -> StepOutput:
        captions = batch["captions"]
        images = batch["images"][:len(captions)]  # validation pads its last batch; captions are the real rows
        if not captions:
            return StepOutput(loss=sum(p.sum() for p in model.parameters()) * 0.0, items=0)
        texts = self.tokenize(captions).to(images.device)
        image_features, text_features, scale = model(images, texts)
        loss = self.loss(image_features, text_features, scale)
        return StepOutput(loss=loss, items=len(captions), metrics={"logit_scale": scale.detach().float()})

    def training_step(self, model: nn.Module, batch: dict[str, Any]) -> StepOutput:
        return self._step(model, batch)

    def validation_step(self, model: nn.Module, batch: dict[str, Any]) -> StepOutput:
        captions = batch["captions"]
        images = batch["images"]  # [B, 3, H, W]: rows past len(captions) are padding
        rows = len(captions)
        texts = self.tokenize(captions + [""] * (len(images) - rows)).to(images.device)  # [B, context]
        image_features, text_features, scale = model(images, texts)  # [B, E] each; every rank, same shapes
        width = image_features.shape[1]
        local = torch.cat([image_features[:rows], text_features[:rows]], dim=1)  # [rows, 2E]: one gather
        gathered, _ = all_gather_rows(local)  # [all rows, 2E], every rank's real rows in rank order
        if rows == 0:  # this rank took part in the collectives; it has nothing to weigh in
            return StepOutput(loss=scale.new_zeros(()), items=0, metrics={"logit_scale": scale.detach().float()})
        whole_batch = getattr(self.loss, "whole_batch", self.loss)  # a plain callable is single-process
        loss = whole_batch(gathered[:, :width], gathered[:, width:], scale)
        return StepOutput(loss=loss, items=rows, metrics={"logit_scale": scale.detach().float()})


def build_contrastive(config: ContrastiveConfig | None, loss: Callable[..., Any] | None) -> ContrastiveTask:
    return ContrastiveTask(config, loss)


def build_clip_loss(config: ClipLossConfig | None) -> ClipLossFunction:
    return ClipLossFunction(config)
