"""The task contract: how a plugin turns (model, batch) into a loss the engine can optimise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@dataclass
class StepOutput:
    """What a task returns for one micro-batch.

    loss:    scalar tensor to backpropagate (mean over this micro-batch's items).
    items:   how many items the loss averaged over (tokens for LMs, images for vision); the
             engine uses it for throughput (tokens/s, images/s).
    metrics: extra scalars to log (floats or 0-d tensors), averaged over micro-steps and ranks.
    flops:   training FLOPs (forward + backward) this micro-batch cost, if the task can tell;
             the engine divides by time and the measured peak to report MFU.
    """

    loss: torch.Tensor
    items: int
    metrics: dict[str, Any] = field(default_factory=dict)
    flops: float | None = None


@runtime_checkable
class Task(Protocol):
    """A task trains and validates a model on batches. It never owns the loop."""

    def training_step(self, model: nn.Module, batch: Any) -> StepOutput: ...

    def validation_step(self, model: nn.Module, batch: Any) -> StepOutput: ...
