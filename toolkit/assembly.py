"""Assembly: a validated recipe turned into the built parts the trainer is handed.

This is the one place that reads a `Recipe` to build things: it joins the process group, seeds,
builds every model (from its plugin, a run's weights, or both), freezes or wraps each one, and
builds the task, loss, data, optimizer, schedule, EMA and callbacks. The trainer receives the
result and never sees the recipe, only its YAML text to store with each checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolkit import checkpoint as public_checkpoint
from toolkit.capabilities import ManyModels, RunFiles
from toolkit.config import TrainerConfig
from toolkit.data import ShardInfo
from toolkit.engine import distributed
from toolkit.engine.callbacks import Callback
from toolkit.engine.distributed import DistContext
from toolkit.engine.ema import ExponentialMovingAverage
from toolkit.engine.malloc import keep_freed_memory_for_reuse
from toolkit.engine.models import ModelSet, RunModel, freeze, wrap_trained
from toolkit.errors import RecipeError
from toolkit.recipe import ModelSpec, Recipe
from toolkit.task import Role


@dataclass
class TrainingParts:
    """Everything a `Trainer` runs with, built and placed."""

    config: TrainerConfig
    context: DistContext
    models: ModelSet
    task: Any
    train_data: Any
    val_data: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any | None
    ema: ExponentialMovingAverage | None
    callbacks: list[Callback] = field(default_factory=list)
    recipe_yaml: str = ""
    run_files: dict[str, Path] = field(default_factory=dict)  # name in the run dir -> source file
    task_name: str = "task"  # the recipe's task.name, for messages


def task_roles(task: Any, recipe: Recipe) -> dict[str, Role]:
    """Each model's role, checked against what the task declares (one clear line per mismatch)."""
    specs = recipe.models
    if not isinstance(task, ManyModels):
        if len(specs) != 1 or next(iter(specs.values())).frozen:
            raise RecipeError(f"{recipe.source}: task '{recipe.components['task'].component.name}' trains one "
                              f"model, but the recipe names {len(specs)} ({', '.join(specs)})",
                              hint="give it a single 'model:' section")
        return {name: Role.trained for name in specs}
    declared = {name: Role(role) for name, role in task.model_roles.items()}
    task_name = recipe.components["task"].component.name
    for name, role in declared.items():
        if name not in specs:
            raise RecipeError(f"{recipe.source}: task '{task_name}' needs a model '{name}' ({role.value}), "
                              f"but 'models:' has only {', '.join(specs)}", hint=f"add models.{name}")
        if role == Role.frozen and not specs[name].frozen:
            raise RecipeError(f"{recipe.source}: models.{name}: task '{task_name}' uses it frozen, but the recipe "
                              "trains it (it would be in the optimizer)", hint=f"set models.{name}.frozen=true")
        if role == Role.trained and specs[name].frozen:
            raise RecipeError(f"{recipe.source}: models.{name}: task '{task_name}' trains it, but it is frozen",
                              hint=f"remove models.{name}.frozen")
    unused = [name for name in specs if name not in declared]
    if unused:
        raise RecipeError(f"{recipe.source}: models.{unused[0]}: task '{task_name}' does not use it",
                          hint=f"the task uses: {', '.join(declared)}")
    return declared


def build_model(spec: ModelSpec, device: torch.device) -> nn.Module:
    """A model from its plugin, from a run (its recipe's model with its weights), or both."""
    if spec.component is None:
        return public_checkpoint.load_model(spec.source, device=device).model
    with device:
        model = spec.component.build()
    if spec.source:
        public_checkpoint.load_weights_into(model, spec.source)
    return model


def build_models(recipe: Recipe, roles: dict[str, Role], context: DistContext, single: bool) -> ModelSet:
    models = []
    for name, spec in recipe.models.items():
        module = build_model(spec, context.device)
        if roles[name] == Role.frozen:
            models.append(RunModel(name, freeze(module, spec.dtype), module, Role.frozen))
            continue
        wrapped, strategy = wrap_trained(module, recipe.dist, context, recipe.trainer.compile)
        models.append(RunModel(name, module, wrapped, Role.trained, strategy))
    return ModelSet(models, single)


def assemble(recipe: Recipe) -> TrainingParts:
    """Build every part of a training run from a validated recipe (all ranks call it)."""
    config = recipe.trainer
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    context = distributed.setup(recipe.dist)
    if context.device.type == "cpu":
        keep_freed_memory_for_reuse()
    loss_spec = recipe.components.get("loss")
    task = recipe.components["task"].build(loss_spec.build() if loss_spec else None)
    roles = task_roles(task, recipe)
    torch.manual_seed(config.seed)  # same initial weights on every rank
    models = build_models(recipe, roles, context, single=not isinstance(task, ManyModels))
    callbacks = [spec.build() for spec in recipe.callbacks]
    trained = models.trained_modules()
    optimizer = recipe.components["optim"].build(trained)
    schedule_spec = recipe.components.get("schedule")
    scheduler = schedule_spec.build(optimizer, config.max_steps) if schedule_spec else None
    ema = ExponentialMovingAverage(trained, config.ema_decay) if config.ema_decay > 0 else None
    shard = ShardInfo(context.rank, context.world_size, config.seed, config.grad_accum)
    data_spec = recipe.components["data"]
    train_data = data_spec.build("train", shard)
    val_data = data_spec.build("val", shard)
    run_files: dict[str, Path] = {}
    for component in (train_data, *(model.module for model in models.by_name.values())):
        if isinstance(component, RunFiles):
            run_files.update(component.run_files())
    return TrainingParts(config, context, models, task, train_data, val_data, optimizer, scheduler, ema,
                         callbacks, recipe.to_yaml(), run_files, recipe.components["task"].component.name)


def build_trainer(recipe: Recipe, resume: str | None = None):
    """`Trainer(assemble(recipe), resume)`: what `toolkit-train` runs."""
    from toolkit.engine.trainer import Trainer

    return Trainer(assemble(recipe), resume=resume)
