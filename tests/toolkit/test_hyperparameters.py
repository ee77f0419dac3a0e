"""After a resume the recipe's optimizer settings win over the checkpoint's, and nothing moves when
they agree (toolkit/engine/hyperparameters.py)."""

from __future__ import annotations

import torch

from plugins.optim import CosineConfig, build_cosine
from toolkit.engine.hyperparameters import recipe_groups, restore_recipe_hyperparameters


def built(lr: float, weight_decay: float):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    return model, optimizer, build_cosine(CosineConfig(warmup_steps=2), optimizer, max_steps=10)


def trained_state(steps: int = 4):
    model, optimizer, scheduler = built(1e-2, 0.1)
    for _ in range(steps):
        model(torch.ones(1, 3)).sum().backward()
        optimizer.step()
        scheduler.step()
    state = optimizer.state_dict()
    for group in state["param_groups"]:  # as the pickle-free checkpoint reader returns them
        group["betas"] = list(group["betas"])
    return state, scheduler.state_dict()


def resumed(lr: float, weight_decay: float):
    _, optimizer, scheduler = built(lr, weight_decay)
    wanted = recipe_groups(optimizer)
    optimizer_state, scheduler_state = trained_state()
    optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(scheduler_state)
    return optimizer, scheduler, restore_recipe_hyperparameters(optimizer, scheduler, wanted)


def test_the_same_recipe_changes_nothing():
    optimizer, _, changes = resumed(1e-2, 0.1)
    assert changes == []
    state, _ = trained_state()
    assert optimizer.param_groups[0]["lr"] == state["param_groups"][0]["lr"]  # not recomputed


def test_a_new_peak_and_weight_decay_apply_at_the_resumed_step():
    optimizer, scheduler, changes = resumed(5e-3, 0.3)
    assert changes == ["weight_decay 0.1 -> 0.3", "lr 0.01 -> 0.005"]
    _, fresh_optimizer, fresh_scheduler = built(5e-3, 0.3)
    for _ in range(4):  # where an uninterrupted 5e-3 run's schedule stands after 4 steps
        fresh_optimizer.step()
        fresh_scheduler.step()
    assert optimizer.param_groups[0]["lr"] == fresh_optimizer.param_groups[0]["lr"]
    assert scheduler.last_epoch == 4 and optimizer.param_groups[0]["weight_decay"] == 0.3
    assert optimizer.state_dict()["state"]  # the moments stay the checkpoint's
