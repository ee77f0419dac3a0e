"""The distill plugin: knowledge distillation of a language model from a frozen teacher.

Registers the `distill` task (toolkit's many-model contract: a trained `student` and a frozen
`teacher`, with an inner loop of several updates per batch). Any LM dataset and model fit it.
Its recipe `distill/tiny.yaml` is this package's `recipes/tiny.yaml`.
"""

from __future__ import annotations

from pathlib import Path

from plugins.distill.task import DistillConfig, DistillTask, build_distill
from toolkit import hookimpl

__all__ = ["DistillConfig", "DistillTask", "build_distill"]

RECIPES_DIR = Path(__file__).resolve().with_name("recipes")  # shipped as package data


@hookimpl
def register_tasks(register):
    register("distill", build_distill, config=DistillConfig)


@hookimpl
def register_recipe_dirs(register):
    register(RECIPES_DIR, namespace="distill")
