"""The `causal_lm` task: next-token prediction on {"input_ids", "labels"} batches.

The model contract is `model(input_ids [B, S]) -> logits [B, S, V]`. The engine may hand over the
model wrapped (DDP, FSDP, torch.compile); the task only ever calls it. Each step reports its
sequence length, so the engine can count FLOPs for MFU from a model that declares
`training_flops_per_item` (toolkit.capabilities.TrainingFlops).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from toolkit.task import StepOutput

from plugins.lm.loss import CrossEntropyLoss


@dataclass
class CausalLMConfig:
    """The `task:` section for `name: causal_lm` (no options yet)."""


class CausalLMTask:
    """Turns (model, batch) into the mean next-token loss over the batch's target tokens."""

    item_unit = "tokens"  # the engine reports tokens/s
    val_perplexity = True  # the engine logs val_ppl = exp(val_loss)

    def __init__(self, config: CausalLMConfig | None = None, loss: Callable[..., Any] | None = None) -> None:
        self.config = config or CausalLMConfig()
        self.loss = loss if loss is not None else CrossEntropyLoss()

    def _step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        input_ids, labels = batch["input_ids"], batch["labels"]  # [B, S], [B, S]
        logits = model(input_ids)  # [B, S, V]
        metrics: dict[str, Any] = {}
        terms_of = getattr(self.loss, "terms", None)
        if callable(terms_of):
            terms = terms_of(logits, labels)
            loss = terms.total
            metrics["ce"] = terms.cross_entropy.detach()
            if terms.z_loss is not None:
                metrics["z_loss"] = terms.z_loss.detach()
            items = int(terms.tokens.item())  # padding rows (end of validation) are not items
        else:  # a loss from another plugin that returns just the scalar
            loss = self.loss(logits, labels)
            metrics["ce"] = loss.detach()
            items = labels.numel()
        return StepOutput(loss=loss, items=items, metrics=metrics, sequence_length=input_ids.shape[1])

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        return self._step(model, batch)

    def validation_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        return self._step(model, batch)


def build_causal_lm(config: CausalLMConfig | None, loss: Callable[..., Any] | None) -> CausalLMTask:
    return CausalLMTask(config, loss)
