"""After a resume, the recipe's optimizer and schedule settings win over the checkpoint's.

A checkpoint's `optimizer.pt` holds the optimizer's moments *and* its param groups (lr, weight
decay, betas ...), and `scheduler.json` the peak learning rates the schedule scales. Loaded as they
are, a resume with `--accept-changes optim.lr=...` would show the new value in `recipe.yaml` and
train with the old one. So the trainer notes the freshly built optimizer's groups before loading,
and afterwards puts the recipe's values back: the moments and the step come from the checkpoint,
the hyperparameters from the recipe. When nothing changed the values put back are the ones loaded,
so an ordinary resume stays bit-exact.
"""

from __future__ import annotations

from typing import Any

import torch

# Keys of a param group that are not hyperparameters the recipe sets: the parameters themselves,
# and the learning rate the schedule moves (the schedule's peak is compared instead).
NOT_SETTINGS = ("params", "lr", "initial_lr")


def recipe_groups(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The built optimizer's param groups without their parameters: what the recipe asked for."""
    return [{key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups]


def _same(saved: Any, wanted: Any) -> bool:
    # A checkpoint stores tuples (betas) as lists.
    if isinstance(saved, (list, tuple)) and isinstance(wanted, (list, tuple)):
        return len(saved) == len(wanted) and all(_same(a, b) for a, b in zip(saved, wanted))
    return saved == wanted


def _peak(group: dict[str, Any]) -> float:
    # A torch LRScheduler records the lr it scales as `initial_lr`; without one, `lr` is the value.
    return group.get("initial_lr", group["lr"])


def restore_recipe_hyperparameters(optimizer: torch.optim.Optimizer, scheduler: Any,
                                   wanted: list[dict[str, Any]]) -> list[str]:
    """Put the recipe's settings (`recipe_groups` taken before the checkpoint was loaded) back into
    `optimizer` and `scheduler`; returns "key old -> new" for each setting that differed."""
    changes: list[str] = []
    for index, (group, recipe) in enumerate(zip(optimizer.param_groups, wanted)):
        where = f"group {index} " if len(wanted) > 1 else ""
        for key, value in recipe.items():
            if key in NOT_SETTINGS:
                continue
            if not _same(group.get(key), value):
                changes.append(f"{where}{key} {group.get(key)} -> {value}")
            group[key] = value  # equal values too: the recipe's types (betas a tuple, not a list)
        loaded_peak = scheduler.base_lrs[index] if scheduler is not None else group["lr"]
        if loaded_peak != _peak(recipe):
            changes.append(f"{where}lr {loaded_peak} -> {_peak(recipe)}")
            if scheduler is None:
                group["lr"] = recipe["lr"]
            else:
                scheduler.base_lrs[index] = group["initial_lr"] = _peak(recipe)
    if scheduler is not None and changes:
        # Recompute the current step's lr from the new peak: step() advances `last_epoch` and
        # sets every group's lr from the schedule, so step back one first.
        scheduler.last_epoch -= 1
        scheduler.step()
    return changes
