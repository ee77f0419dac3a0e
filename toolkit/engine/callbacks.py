"""The trainer-callback contract: observers of a run that never change the loop.

A callback plugin registers `factory(config) -> Callback` through `register_callbacks`; a recipe
enables it with an entry in its `callbacks:` list. Every rank calls every callback, so a callback
that writes files checks `run.is_main` (given once, at `on_train_start`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunInfo:
    """What a callback may know about the run it observes."""

    run_dir: Path
    rank: int
    world_size: int
    start_step: int  # 0 for a fresh run, the checkpoint's step for a resumed one
    max_steps: int
    item_unit: str  # "tokens", "images", ...: the unit of `<unit>_per_s` in step metrics

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Callback:
    """Subclass and override what you need. Each method is called on every rank.

    Step metrics hold `loss`, `lr`, `<item_unit>_per_s`, `step_time_s` and, when known, `mfu`
    and `grad_norm`, plus the task's own metrics (all floats, averaged over ranks). Evaluation
    metrics hold `val_loss` and `val_<name>` for each task metric.
    """

    def on_train_start(self, run: RunInfo) -> None:
        """Once, before the first step (after a resume has restored the state)."""

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        """After every optimizer step; `step` counts completed steps (1 after the first)."""

    def on_evaluate(self, step: int, metrics: dict[str, float]) -> None:
        """After each validation, with its metrics."""

    def on_save(self, step: int, checkpoint: Path) -> None:
        """After each checkpoint is complete on disk (on every rank)."""

    def on_train_end(self, step: int, metrics: dict[str, float]) -> None:
        """Once, after the last step, its evaluation and its save (not called when training fails)."""
