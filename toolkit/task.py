"""The task contract: how a plugin turns (model, batch) into a loss the engine can optimise.

A task that uses one model receives it (possibly wrapped for DDP/FSDP/compile: only call it). A
task that declares `model_roles` (toolkit.capabilities.ManyModels) receives a read-only mapping
name -> model instead: trained models wrapped like a single model, frozen ones in eval mode with
gradients off. Optional capabilities (item unit, perplexity, a custom inner loop) are the
Protocols of toolkit.capabilities.
"""

from __future__ import annotations

import enum
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
    sequence_length: items per example (tokens per sequence; 1 for images), which the engine
             hands to a model's `training_flops_per_item` (toolkit.capabilities.TrainingFlops)
             to count FLOPs for MFU.
    flops:   training FLOPs this micro-batch cost, for a task that knows better than the models'
             declared counts (generation in a rollout, say); None lets the engine count.
    """

    loss: torch.Tensor
    items: int
    metrics: dict[str, Any] = field(default_factory=dict)
    sequence_length: int = 1
    flops: float | None = None


class Role(str, enum.Enum):
    """How a many-model task uses one of its models."""

    trained = "trained"  # in the optimizer, wrapped for DDP/FSDP2, checkpointed with its state
    frozen = "frozen"  # inference only: no gradients, not in the optimizer, recorded by its source


@runtime_checkable
class Task(Protocol):
    """A task trains and validates a model on batches. It never owns the loop."""

    def training_step(self, model: nn.Module, batch: Any) -> StepOutput: ...

    def validation_step(self, model: nn.Module, batch: Any) -> StepOutput: ...
