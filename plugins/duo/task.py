"""The `duo_lm` task: next-token loss of a Duo model plus its router's budget loss.

It is the `causal_lm` task (plugins.lm.task) run with the batch's `sample_seeds` handed to the
router (random routes then depend on each sequence's place in the epoch, not on the rank, so DDP
on N ranks routes as one process does), and two additions read from the model after each
forward: the router's auxiliary loss (a learned router's budget term; nothing for the others)
is added to the loss, and `big_share`, the share of (layer, token) pairs that used the big FFN,
is logged beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from plugins.lm.task import CausalLMTask
from toolkit.task import StepOutput


@dataclass
class DuoLMConfig:
    """The `task:` section for `name: duo_lm` (no options yet)."""


def unwrap(model: nn.Module) -> nn.Module:
    """The model under DDP (`module`) and torch.compile (`_orig_mod`) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


class DuoLMTask(CausalLMTask):
    """causal_lm plus the router's budget loss and the big-FFN share."""

    def _step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        duo = unwrap(model)
        with duo.seeded(batch.get("sample_seeds")):  # random routes from each sequence's own seed
            output = super()._step(model, batch)
        auxiliary = duo.router.auxiliary_loss()
        if auxiliary is not None:
            output.loss = output.loss + auxiliary
            output.metrics["budget_loss"] = auxiliary.detach()
        output.metrics["big_share"] = duo.big_share()
        return output


def build_duo_lm(config: DuoLMConfig | None, loss) -> DuoLMTask:
    return DuoLMTask(None, loss)
