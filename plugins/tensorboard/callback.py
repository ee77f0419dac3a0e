"""The TensorBoard callback: writes a run's step and validation metrics as TensorBoard event files.

Only rank 0 writes. Step metrics go under `train/<name>` (`train/loss`, `train/lr`,
`train/tokens_per_s`, `train/mfu`, `train/grad_norm`, and any metric the task adds); validation
metrics go under `val/<name>` with the `val_` prefix dropped (`val/loss`, `val/ppl`, ...), so
TensorBoard shows the two groups side by side.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from toolkit.engine.callbacks import Callback, RunInfo
from toolkit.errors import PluginError, RecipeError

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

INSTALL_HINT = "pip install tensorboard (or the toolkit's extra: pip install 'toolkit[tensorboard]')"


@dataclass
class TensorBoardConfig:
    log_dir: str = ""  # empty = <run_dir>/tensorboard; a relative path is taken from the cwd, like trainer.out_dir
    every: int = 1  # write step metrics every N optimizer steps (and always at the last step)
    flush_secs: float = 30.0  # at most this long between writes to disk (a save flushes at once)


def _summary_writer_class() -> type[SummaryWriter]:
    """torch's SummaryWriter, imported late: importing the plugin must not need tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:  # tensorboard missing, or older than torch accepts
        raise PluginError(
            f"the tensorboard callback needs the tensorboard package: {error}",
            hint=INSTALL_HINT,
        ) from error
    return SummaryWriter


def _as_float(value: Any) -> float | None:
    """A metric as a float, or None for what is not one number (a step counter, a string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    return None


class TensorBoardCallback(Callback):
    """Writes scalars through `torch.utils.tensorboard.SummaryWriter` on the main rank."""

    def __init__(self, config: TensorBoardConfig) -> None:
        if config.every < 1:
            raise RecipeError(f"tensorboard callback: 'every' must be >= 1, got {config.every}")
        if not (config.flush_secs > 0 and math.isfinite(config.flush_secs)):
            raise RecipeError(f"tensorboard callback: 'flush_secs' must be > 0, got {config.flush_secs}")
        self.config = config
        # Checked here, on every rank, so that a missing package fails the whole run when the
        # callbacks are built rather than rank 0 alone at its first step.
        self._writer_class = _summary_writer_class()
        self.run: RunInfo | None = None
        self.writer: SummaryWriter | None = None
        self.log_dir: Path | None = None

    def on_train_start(self, run: RunInfo) -> None:
        self.run = run
        if not run.is_main:
            return
        self.log_dir = Path(self.config.log_dir) if self.config.log_dir else Path(run.run_dir) / "tensorboard"
        # A resumed run appends to the same directory; purge_step tells TensorBoard to drop every
        # event the earlier run wrote after its checkpoint, as metrics.jsonl does. The checkpoint
        # holds `start_step` completed steps, so that step's events are kept.
        purge_step = run.start_step + 1 if run.start_step > 0 else None
        self.writer = self._writer_class(
            log_dir=str(self.log_dir), purge_step=purge_step, flush_secs=self.config.flush_secs
        )

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        if self.writer is None:
            return
        last_step = self.run is not None and step == self.run.max_steps
        if step % self.config.every != 0 and not last_step:
            return
        self._write(metrics, step, prefix="train/", strip="")

    def on_evaluate(self, step: int, metrics: dict[str, float]) -> None:
        if self.writer is None:
            return
        self._write(metrics, step, prefix="val/", strip="val_")

    def on_save(self, step: int, checkpoint: Path) -> None:
        # What a resume keeps must be on disk by the time the checkpoint is.
        if self.writer is not None:
            self.writer.flush()

    def on_train_end(self, step: int, metrics: dict[str, float]) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _write(self, metrics: dict[str, Any], step: int, prefix: str, strip: str) -> None:
        assert self.writer is not None
        for name, value in metrics.items():
            number = _as_float(value)
            if name == "step" or number is None:  # the step is the x axis, not a curve
                continue
            if strip and name.startswith(strip):
                name = name[len(strip):]
            self.writer.add_scalar(prefix + name, number, global_step=step)


def build_tensorboard(config: TensorBoardConfig) -> TensorBoardCallback:
    """The callback factory registered as `tensorboard`."""
    return TensorBoardCallback(config)
