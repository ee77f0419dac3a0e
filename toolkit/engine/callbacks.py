"""The trainer-callback contract: observers of a run that never change the loop."""

from __future__ import annotations

from pathlib import Path


class Callback:
    """Subclass and override what you need; registered through `register_callbacks`."""

    def on_evaluate(self, step: int, metrics: dict[str, float]) -> None:
        """After each validation, with its metrics (val_loss, ...)."""

    def on_save(self, step: int, checkpoint: Path) -> None:
        """After each checkpoint is complete on disk."""
