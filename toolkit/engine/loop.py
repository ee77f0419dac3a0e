"""The trainer's services for one training step, as a context object a task can drive.

The default step (micro-batches with gradient accumulation, then one update) is written with
these services, and a task with its own inner loop (toolkit.capabilities.CustomLoop: rollouts,
several updates per batch) uses the same ones instead of reimplementing them:

    def train_step(self, context):
        batch = context.next_batch()
        for _ in range(2):                       # two updates on one batch
            for _ in context.micro_steps(1):     # no_sync on all but the last micro-step
                with context.autocast():
                    output = self.distill(context.models, batch)
                context.backward(output)         # scaled by 1 / micro-steps; logged
            context.optimizer_step()             # clip, NaN guard on every rank, step, EMA
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from toolkit.capabilities import TrainingFlops
from toolkit.config import Precision, TrainerConfig
from toolkit.engine import distributed
from toolkit.engine.distributed import DistContext
from toolkit.engine.models import ModelSet
from toolkit.errors import TrainingError
from toolkit.task import StepOutput


def move_to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: move_to(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(value, device) for value in batch)
    return batch


def run_autocast(config: TrainerConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast when the run asks for it (weights and optimizer state stay fp32), else a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == Precision.bf16)


class StepContext:
    """Services for one optimizer step (or, for a custom loop, one trainer step of several updates).

    Losses, items, FLOPs and task metrics of every `backward` are summed on the device and
    reduced across ranks once per update; `summary()` gives what the trainer logs.
    """

    def __init__(self, models: ModelSet, optimizer: torch.optim.Optimizer, batches: Iterator[Any],
                 config: TrainerConfig, context: DistContext, step: int,
                 after_update: Callable[[], None] | None = None, last_checkpoint: str = "none saved yet") -> None:
        self._models = models
        self.models: nn.Module | Mapping[str, nn.Module] = models.for_task()
        self.optimizer = optimizer
        self._batches = batches
        self._config = config
        self._dist = context
        self.step = step  # steps completed before this one
        self._after_update = after_update  # the EMA update
        self._scale = 1.0
        self._pending: list[tuple[torch.Tensor, int, float, dict[str, Any]]] = []
        self._totals: dict[str, float] = {"loss": 0.0, "items": 0.0, "flops": 0.0}
        self._metric_totals: dict[str, float] = {}
        self._backward_calls = 0
        self._updates = 0
        self._grad_norm: float | None = None
        self._logged: dict[str, float] = {}
        self.save_requested = False
        self._last_checkpoint = last_checkpoint  # named when the loss goes bad

    # -- data and precision -----------------------------------------------------------------------

    def next_batch(self) -> Any:
        """The next micro-batch of this rank's share, on the device."""
        try:
            return move_to(next(self._batches), self._dist.device)
        except StopIteration:
            raise TrainingError("the training data ran out; a training dataset must repeat forever") from None

    def autocast(self) -> contextlib.AbstractContextManager:
        return run_autocast(self._config, self._dist.device)

    # -- gradients --------------------------------------------------------------------------------

    def micro_steps(self, count: int | None = None) -> Iterator[int]:
        """Yields `count` (default trainer.grad_accum) micro-step indices; gradient sync across ranks
        is skipped on all but the last, and `backward` scales each loss by 1 / count."""
        count = count or self._config.grad_accum
        for index in range(count):
            self._scale = 1.0 / count
            with self._models.no_sync(skip=index < count - 1):
                yield index
        self._scale = 1.0

    def backward(self, output: StepOutput) -> None:
        """Backpropagate `output.loss` (scaled for accumulation) and keep its figures for the log."""
        (output.loss * self._scale).backward()
        flops = output.flops if output.flops is not None else self._model_flops(output)
        self._pending.append((output.loss.detach().float(), output.items, flops, output.metrics))

    def _model_flops(self, output: StepOutput) -> float:
        per_item = sum(model.module.training_flops_per_item(output.sequence_length)
                       for model in self._models.trained if isinstance(model.module, TrainingFlops))
        return float(per_item) * output.items

    def optimizer_step(self) -> float | None:
        """Clip, check the loss and gradients are finite on every rank, step, zero the gradients.

        Raises TrainingError (nothing is saved) when the loss or the gradient norm is not finite.
        Returns the gradient norm before clipping when clipping is on.
        """
        grad_norm = None
        if self._config.clip_grad > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self._models.parameters(), self._config.clip_grad)
        loss = self._reduce_pending()
        if not math.isfinite(loss) or (grad_norm is not None and not torch.isfinite(grad_norm)):
            raise TrainingError(f"loss became {loss} at step {self.step + 1}; stopped without saving",
                                hint=f"last good checkpoint: {self._last_checkpoint}; lower optim.lr or check the data")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self._after_update is not None:
            self._after_update()
        self._updates += 1
        self._grad_norm = float(grad_norm) if grad_norm is not None else None
        return self._grad_norm

    def _reduce_pending(self) -> float:
        """One all-reduce of the figures since the last update; returns their mean loss."""
        if not self._pending:
            return 0.0
        keys = sorted({key for *_, metrics in self._pending for key in metrics})
        losses = torch.stack([loss for loss, *_ in self._pending]).sum()  # stays on the device until here
        metric_sums = [sum(float(metrics.get(key, 0.0)) for *_, metrics in self._pending) for key in keys]
        packed = torch.tensor([losses.item(), float(len(self._pending)),
                               float(sum(items for _, items, _, _ in self._pending)),
                               float(sum(flops for _, _, flops, _ in self._pending)), *metric_sums],
                              dtype=torch.float64, device=self._dist.device)  # nccl reduces device tensors
        distributed.all_reduce_sum(packed)
        self._pending.clear()
        calls = packed[1].item()
        self._totals["loss"] += packed[0].item()
        self._backward_calls += calls
        self._totals["items"] += packed[2].item()
        self._totals["flops"] += packed[3].item()
        for index, key in enumerate(keys):
            self._metric_totals[key] = self._metric_totals.get(key, 0.0) + packed[4 + index].item()
        return packed[0].item() / calls

    # -- logging and saving -----------------------------------------------------------------------

    def log(self, **metrics: float) -> None:
        """Extra figures for this step's metrics line (the task's own; rank 0's values)."""
        self._logged.update({key: float(value) for key, value in metrics.items()})

    def request_save(self) -> None:
        """Checkpoint as soon as this step completes (a checkpoint mid-step could not resume exactly)."""
        self.save_requested = True

    def summary(self) -> dict[str, float]:
        """Mean loss and metrics over every backward of the step and every rank; items and FLOPs summed."""
        self._reduce_pending()  # figures of a backward with no update after it still count
        if self._updates == 0:
            raise TrainingError(f"step {self.step + 1} made no optimizer update",
                                hint="a custom train_step must call context.optimizer_step()")
        calls = max(self._backward_calls, 1.0)
        summary = {"loss": self._totals["loss"] / calls, "items": self._totals["items"],
                   "flops": self._totals["flops"]}
        if self._grad_norm is not None:
            summary["grad_norm"] = self._grad_norm
        summary.update({key: value / calls for key, value in self._metric_totals.items()})
        summary.update(self._logged)
        return summary


def default_train_step(task: Any, context: StepContext) -> None:
    """The usual step: `trainer.grad_accum` micro-batches, then one update."""
    for _ in context.micro_steps():
        batch = context.next_batch()
        with context.autocast():
            output = task.training_step(context.models, batch)
        context.backward(output)
    context.optimizer_step()
