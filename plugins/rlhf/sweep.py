"""The alpha sweep: validation loss along the straight line between two runs' weights.

For each alpha the model is (1 - alpha) * RUN_A + alpha * RUN_B (the soup of plugins.rlhf.soup,
built in memory), scored with RUN_A's recipe: its task's validation step on its data's validation
split, the loss averaged over items (tokens) as the trainer does. alpha 0 is RUN_A, 1 is RUN_B.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch

from plugins.rlhf.soup import Ingredient, SoupError, soup_state
from toolkit.capabilities import ManyModels
from toolkit.checkpoint import load_state_strict
from toolkit.config import build_config
from toolkit.data import ShardInfo
from toolkit.errors import RecipeError
from toolkit.plugins import get_registries


@dataclass
class SweepPoint:
    alpha: float
    val_loss: float
    items: int


def build_section(kind: str, section: dict[str, Any], *args: Any) -> Any:
    """A component a saved recipe section names, built with `args` after its config."""
    options = dict(section)
    component = get_registries()[kind].get(str(options.pop("name")))
    config = build_config(component.config_class, options, kind) if component.config_class else None
    return component.factory(config, *args)


class Scorer:
    """RUN_A's task and validation data, ready to score any model of its architecture."""

    def __init__(self, ingredient: Ingredient, max_batches: int = 0) -> None:
        recipe = ingredient.recipe
        if not recipe.get("task") or not recipe.get("data"):
            raise RecipeError(f"{ingredient.checkpoint / 'recipe.yaml'}: no task or data section to score with")
        loss = build_section("losses", recipe["loss"]) if recipe.get("loss") else None
        self.task = build_section("tasks", recipe["task"], loss)
        self.data = build_section("datasets", recipe["data"], "val", ShardInfo())
        if self.data is None:
            raise SoupError(f"{ingredient.given}: its recipe has no validation data to sweep on")
        self.model_name = ingredient.name
        self.max_batches = max_batches

    @torch.no_grad()
    def loss(self, model: torch.nn.Module) -> tuple[float, int]:
        """(mean validation loss over items, items) of `model`."""
        model.eval()
        given = {self.model_name: model} if isinstance(self.task, ManyModels) else model
        total, items = 0.0, 0
        for index, batch in enumerate(self.data):
            if self.max_batches and index >= self.max_batches:
                break
            output = self.task.validation_step(given, batch)
            total += float(output.loss) * output.items
            items += output.items
        return total / max(items, 1), items


def alpha_sweep(first: Ingredient, second: Ingredient, alphas: Iterable[float], max_batches: int = 0) -> list[SweepPoint]:
    scorer = Scorer(first, max_batches)
    model = first.model.component.factory(first.model.config)
    points = []
    for alpha in alphas:
        if not 0.0 <= alpha <= 1.0:
            raise SoupError(f"--alphas must lie in [0, 1], got {alpha}")
        state = soup_state([first, second], [1.0 - alpha, alpha])
        load_state_strict(model, state, first.checkpoint)
        loss, items = scorer.loss(model)
        points.append(SweepPoint(alpha, loss, items))
    return points
