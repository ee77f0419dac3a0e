"""The models of a run: each placed on the device, then either frozen or wrapped for training.

A trained model is (optionally) compiled and wrapped for DDP or FSDP2 when several processes run;
the engine keeps the raw module for checkpoints, EMA and capabilities (MFU, dry-run summaries) and
hands the wrapped one to the task. A frozen model (a reference, a teacher, a reward model) is put
in eval mode with gradients off, optionally cast to bf16, and is never in the optimizer or a
checkpoint: the recipe records where it came from.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import torch
from torch import nn

from toolkit.capabilities import ShardingUnits
from toolkit.config import DistConfig, Precision, Strategy
from toolkit.engine.distributed import DistContext
from toolkit.task import Role


@dataclass
class RunModel:
    """One model of a run, as built by its plugin (`module`) and as the task calls it (`wrapped`)."""

    name: str
    module: nn.Module
    wrapped: nn.Module
    role: Role
    strategy: Strategy | None = None  # how `wrapped` was wrapped; None in a single process

    def no_sync(self) -> contextlib.AbstractContextManager:
        """Skip DDP's gradient all-reduce (accumulation micro-steps but the last)."""
        if self.strategy == Strategy.ddp:
            return self.wrapped.no_sync()
        return contextlib.nullcontext()  # FSDP2 reduce-scatters every micro-step; one process has nothing to skip

    def reshard(self) -> None:
        """FSDP2 leaves the root unsharded after a forward-only pass (evaluation): shard it again."""
        if self.strategy == Strategy.fsdp:
            self.module.reshard()


def freeze(module: nn.Module, dtype: Precision) -> nn.Module:
    module.requires_grad_(False)
    module.eval()
    if dtype == Precision.bf16:
        module.to(torch.bfloat16)
    return module


def wrap_trained(module: nn.Module, config: DistConfig, context: DistContext, compile_model: bool) -> tuple[nn.Module, Strategy | None]:
    """DDP or FSDP2 (`fully_shard` per declared unit, then the root) around a trained model.

    `dist.reshard_after_forward: false` keeps FSDP2's gathered parameters from forward to backward
    (gradients and optimizer state stay sharded): the paper's "shard gradients and optimizer only".

    FSDP2 shards in place, so the raw module is the wrapped one; DDP and torch.compile return a
    wrapper whose parameters are the module's own.
    """
    wrapped = module
    if compile_model:
        # Static shapes: training batches never change shape, and dynamic-shape graphs
        # have failed to compile in inductor (torch 2.11 on CUDA) where static ones work.
        wrapped = torch.compile(module, dynamic=False)
    if not context.distributed:
        return wrapped, None
    if config.strategy == Strategy.ddp:
        device_ids = [context.device.index] if context.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(wrapped, device_ids=device_ids), Strategy.ddp
    from torch.distributed.fsdp import fully_shard

    reshard = config.reshard_after_forward
    for unit in module.fsdp_units() if isinstance(module, ShardingUnits) else []:
        fully_shard(unit, reshard_after_forward=reshard)
    fully_shard(module, reshard_after_forward=reshard)
    return wrapped, Strategy.fsdp


class ModelSet:
    """The run's models by name. `single` marks a recipe with one `model:` section, whose task is
    handed that model itself rather than a mapping."""

    def __init__(self, models: list[RunModel], single: bool) -> None:
        self.by_name = {model.name: model for model in models}
        self.single = single

    @property
    def trained(self) -> list[RunModel]:
        return [model for model in self.by_name.values() if model.role == Role.trained]

    @property
    def frozen(self) -> list[RunModel]:
        return [model for model in self.by_name.values() if model.role == Role.frozen]

    def for_task(self) -> nn.Module | Mapping[str, nn.Module]:
        """What the task's steps receive: the one model, or a read-only name -> model mapping."""
        if self.single:
            return self.trained[0].wrapped
        return MappingProxyType({name: model.wrapped for name, model in self.by_name.items()})

    def trained_modules(self) -> nn.Module:
        """The trained models' raw modules as one module (the optimizer's and EMA's target):
        the module itself when there is one, else a ModuleDict keyed by model name."""
        trained = self.trained
        if len(trained) == 1:
            return trained[0].module
        return nn.ModuleDict({model.name: model.module for model in trained})

    def parameters(self) -> list[nn.Parameter]:
        """Every trained parameter once (tied weights are one parameter)."""
        unique: dict[int, nn.Parameter] = {}
        for model in self.trained:
            for parameter in model.module.parameters():
                unique.setdefault(id(parameter), parameter)
        return list(unique.values())

    def train(self) -> None:
        for model in self.trained:
            model.wrapped.train()

    def eval(self) -> None:
        for model in self.trained:
            model.wrapped.eval()

    def no_sync(self, skip: bool) -> contextlib.ExitStack:
        """All trained models' `no_sync` when `skip` (micro-steps but the last of an accumulation)."""
        stack = contextlib.ExitStack()
        if skip:
            for model in self.trained:
                stack.enter_context(model.no_sync())
        return stack

    def reshard(self) -> None:
        for model in self.trained:
            model.reshard()

    def describe(self) -> dict[str, Any]:
        return {name: model.role.value for name, model in self.by_name.items()}
