"""The `sft` task: supervised fine-tuning of a `policy` model on prompt/response batches.

The loss is the mean next-token cross-entropy over response tokens (the dataset labels prompt
tokens -100). A batch whose rows hold several examples (document ids above 0, from
`prompt_response` with packing) runs the document-masked forward of plugins.rlhf.packed, so no
example attends to another; a batch of one example per row runs the model's own forward.

The model is named `policy` (a recipe's `models: {policy: {source: runs/base}}` starts it from a
trained base), which is what the RL task and `toolkit-soup` read from an SFT run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn

from plugins.lm.loss import CrossEntropyLoss
from plugins.rlhf.packed import packed_logits, require_packing_support
from toolkit.errors import RecipeError
from toolkit.task import Role, StepOutput

POLICY = "policy"


@dataclass
class SFTConfig:
    """The `task:` section for `name: sft` (no options yet)."""


def causal_logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits [B, S, V] of a prompt/response batch; document-masked when rows are packed."""
    input_ids = batch["input_ids"]  # [B, S]
    documents = batch.get("document_ids")  # [B, S] or None
    if documents is not None and bool((documents > 0).any()):
        return packed_logits(require_packing_support(model), input_ids, documents)
    return model(input_ids)


class SFTTask:
    """Response-only cross-entropy of the `policy` model."""

    model_roles = {POLICY: Role.trained}
    item_unit = "tokens"
    val_perplexity = True  # perplexity of the responses

    def __init__(self, config: SFTConfig | None = None, loss: Callable[..., Any] | None = None) -> None:
        self.config = config or SFTConfig()
        self.loss = loss if loss is not None else CrossEntropyLoss()
        if not callable(getattr(self.loss, "terms", None)):
            raise RecipeError("task 'sft' needs a loss with per-token terms (the lm plugin's cross_entropy)",
                              hint="use loss: {name: cross_entropy} or leave the loss section out")

    def _step(self, models: Mapping[str, nn.Module], batch: dict[str, torch.Tensor]) -> StepOutput:
        logits = causal_logits(models[POLICY], batch)  # [B, S, V]
        terms = self.loss.terms(logits, batch["labels"])
        return StepOutput(loss=terms.total, items=int(terms.tokens.item()), sequence_length=logits.shape[1],
                          metrics={"ce": terms.cross_entropy.detach()})

    def training_step(self, models: Mapping[str, nn.Module], batch: dict[str, torch.Tensor]) -> StepOutput:
        return self._step(models, batch)

    def validation_step(self, models: Mapping[str, nn.Module], batch: dict[str, torch.Tensor]) -> StepOutput:
        return self._step(models, batch)


def build_sft(config: SFTConfig | None, loss: Callable[..., Any] | None) -> SFTTask:
    return SFTTask(config, loss)
