"""The distill plugin: knowledge distillation of a language model from a frozen teacher.

Registers the `distill` task (toolkit's many-model contract: a trained `student` and a frozen
`teacher`, with an inner loop of several updates per batch). Any LM dataset and model fit it.
"""

from __future__ import annotations

from plugins.distill.task import DistillConfig, DistillTask, build_distill
from toolkit import hookimpl

__all__ = ["DistillConfig", "DistillTask", "build_distill"]


@hookimpl
def register_tasks(register):
    register("distill", build_distill, config=DistillConfig)
